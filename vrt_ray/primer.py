"""The answer-format primer: a few SFT steps that teach a base model the answer syntax with
verdicts drawn at random, and nothing about the videos.

A random tiny model never writes a parseable answer, so every reward is 0 and GRPO has no
signal. After the primer its answers parse and its verdicts are coin flips: GRPO alone then has
to find which verdicts earn reward. Tests and the GRPO benchmarks start from it; the full recipe
starts from the warm-up and cold start instead.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import List, Sequence

import torch
from omegaconf import DictConfig
from tqdm import trange

from vrt_ray.data.pair import VERDICTS, PreferencePair
from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.judge import frame_counts
from vrt_ray.learner_core import sft_loss_for, train_sequences
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_policy, load_processor, save_checkpoint
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput, format_turn


def prime(model_dir: str | Path, out: str | Path, pairs: Sequence[PreferencePair],
          cfg: DictConfig, steps: int = 60, lr: float = 1e-3, seed: int = 0,
          progress: bool = False) -> List[float]:
    """Fine-tune `model_dir` to answer at once in the preset's syntax with random verdicts
    (one pair per step); writes the result to `out` and returns the losses."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    processor = load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels)
    model = load_policy(model_dir, "float32")
    model.train()
    preset, budgets = load_preset(cfg.protocol.preset), Budgets.from_config(cfg.protocol)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    dimensions = list(cfg.protocol.dimensions) + ["overall"]
    cache = FrameCache(256 << 20)
    jobs = []
    for pair in pairs:
        videos = {"A": pair.video_a, "B": pair.video_b}
        counts = frame_counts(videos, cfg.video.backend)
        jobs.append(EpisodeJob(EpisodeInput(pair.id, pair.prompt, videos, counts)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in trange(steps, desc="primer", disable=not progress):
        answer = {d: rng.choice(VERDICTS) for d in dimensions}
        text = format_turn(preset, "I compare the two videos.", answer=answer)
        trajectory = replay(processor, rng.choice(jobs), preset, budgets, pixels, [text], cache)
        loss, _ = sft_loss_for(model, processor, train_sequences(trajectory), cache=cache)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    save_checkpoint(out, model, processor)
    return losses
