"""`vrt-ray warmup CONFIG [key=value ...]`: the perception warm-up (DESIGN.md §12) of a tiny
base model: SFT on the synthetic frame captions (`captions.jsonl` under `data.dir`) of the
training pairs' videos, `warmup.steps` steps of `warmup.batch_size` captions, through the
learner group, mixed with `warmup.restate_per_pair` restating sequences a training pair
(vrt_ray/warmup.py: the prompt copied, under a random prompt), `warmup.restate_share` of each
batch when set, else drawn alike with the captions. The captions of validation
videos, and one restating sequence a validation pair, give a held-out loss before and after.
With `warmup.copy_steps`, a copying phase comes first: that many steps of text-only copying
sequences (vrt_ray/copy_corpus.py, `warmup.copy_kinds`) at `warmup.copy_lr`, labelled on the
copied tokens alone, with a held-out loss per kind before and after. With
`warmup.copying_per_step`, that many fresh copying sequences join every caption step, carrying
`warmup.copying_share` of its loss (0: as many tokens as they label)."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from omegaconf import DictConfig
from tqdm import trange

from actors.learner import LearnerGroup
from jobs.cold_start import copy_held_out, copy_loss, copy_source, eval_metrics
from jobs.grpo import start_ray
from vrt_ray.copy_batches import CopySource, copying_mixer
from vrt_ray.data.loaders import load_pairs
from vrt_ray.errors import VrtError
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.models import load_processor
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets
from vrt_ray.token_loss import TokenClasses, loss_by_class, loss_by_label
from vrt_ray.tracking import Tracker
from vrt_ray.warmup import (caption_field_labels, caption_sequences, restate_sequences,
                            warmup_batch)

HELD_OUT = 64  # validation captions scored before and after, spread over the videos


def split_pairs(cfg: DictConfig, split: str) -> list:
    path = Path(cfg.data.dir) / split
    return load_pairs(path, cfg.data.format, cfg.data.video_root or None).pairs \
        if path.is_file() else []


def videos_of(pairs) -> set:
    return {str(Path(v).resolve()) for p in pairs for v in (p.video_a, p.video_b)}


def held_out_loss(learners: LearnerGroup, items, classes: TokenClasses, fields,
                  copies: Tuple[list, list]) -> Dict:
    """Mean loss per caption token: `all` and per token class, then per fact of the frame
    (`colour`, `shape`, `position`, ...: vrt_ray/warmup.py); then on the copied tokens of the
    held-out copying sequences `copies` (`copy_frames`, ...)."""
    values = learners.logprobs(items)
    return {**loss_by_class(items, values, classes), **loss_by_label(items, values, fields),
            **copy_loss(learners, *copies)}


def copy_phase(cfg: DictConfig, model_dir: str, out: str, source: CopySource,
               copies: Tuple[list, list], pixels: PixelBudget, tracker: Tracker) -> Dict:
    """The copying phase (sequences from `source`): writes the model to `out`; returns it and
    the held-out loss on the copied tokens of `copies` per kind, before and after."""
    w = cfg.warmup
    held_out, kinds = copies
    rng = np.random.default_rng([cfg.seed, 5])
    learners = LearnerGroup(cfg.learner, model_dir, total_steps=w.copy_steps, pixels=pixels,
                            lr=w.copy_lr)
    try:
        losses = [copy_loss(learners, held_out, kinds)]
        bar = trange(w.copy_steps, desc="copying", unit="step")
        for step in bar:
            metrics = learners.train_sft(source.items(w.copy_kinds, w.batch_size, rng)[0])
            tracker.log_metrics({f"copy/{k}": v for k, v in metrics.items()}, step + 1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        losses.append(copy_loss(learners, held_out, kinds))
        learners.save(out)
    finally:
        learners.shutdown()
    tracker.log_metrics(eval_metrics(losses[-1]), w.copy_steps)
    return {"model": out, "steps": w.copy_steps, "eval_loss": losses}


def main(cfg: DictConfig, model_dir: Optional[str] = None, out: Optional[str] = None) -> Dict:
    """Warm up `model_dir` (default `model.path`); writes the policy to `out` (default
    `<output_dir>/warmup`) and returns a summary."""
    w = cfg.warmup
    model_dir = model_dir or cfg.model.path
    out = out or str(Path(cfg.output_dir) / "warmup")
    data_dir = Path(cfg.data.dir)
    captions = data_dir / "captions.jsonl"
    if not captions.is_file():
        raise VrtError(f"{captions}: no such file (make one with `vrt-ray data synth`)")
    rows = [json.loads(line) for line in captions.open() if line.strip()]
    train_pairs, val_pairs = split_pairs(cfg, cfg.data.train), split_pairs(cfg, cfg.data.val)
    train_videos, val_videos = videos_of(train_pairs), videos_of(val_pairs)
    train_rows = [r for r in rows if str((data_dir / r["video"]).resolve()) in train_videos]
    val_rows = [r for r in rows if str((data_dir / r["video"]).resolve()) in val_videos]
    val_rows = val_rows[::max(1, len(val_rows) // HELD_OUT)][:HELD_OUT]
    if not train_rows:
        raise VrtError(f"{captions}: no caption of a training video")
    processor = load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    preset, cache = load_preset(cfg.protocol.preset), FrameCache(cfg.video.cache_mb << 20)
    described = caption_sequences(processor, train_rows, data_dir, preset, pixels, cache)
    held_out = caption_sequences(processor, val_rows, data_dir, preset, pixels, cache)
    fields = caption_field_labels(processor.tokenizer, val_rows, held_out)
    restating = []
    if w.restate_per_pair:
        budgets, rng = Budgets.from_config(cfg.protocol), np.random.default_rng([cfg.seed, 3])
        restating = restate_sequences(processor, train_pairs, preset, budgets, pixels, cache, rng,
                                      w.restate_per_pair)[0]
        restate, restate_fields = restate_sequences(processor, val_pairs[:HELD_OUT], preset,
                                                    budgets, pixels, cache, rng, 1)
        held_out, fields = held_out + restate, fields + restate_fields
    start_ray(cfg)
    tracker = Tracker(cfg, run_name=f"{cfg.name}-warmup")
    rng, losses, status, copying = random.Random(cfg.seed), [], "FAILED", None
    learners = None
    classes = TokenClasses(processor.tokenizer)
    source = copy_source(cfg, processor, preset, pixels, train_pairs)
    copies = copy_held_out(cfg, source)
    try:
        if w.copy_steps:
            copying = copy_phase(cfg, model_dir, f"{out}_copying", source, copies, pixels,
                                 tracker)
        learners = LearnerGroup(cfg.learner, copying["model"] if copying else model_dir,
                                total_steps=w.steps, pixels=pixels, lr=w.lr)
        learners.preload(described + restating)  # steps draw at random: decode each video once
        if held_out:
            losses.append(held_out_loss(learners, held_out, classes, fields, copies))
        mix = copying_mixer(source, w.copy_kinds, w.copying_per_step, w.copying_share,
                            np.random.default_rng([cfg.seed, 8]))
        bar = trange(w.steps, desc="warm-up", unit="step")
        for step in bar:
            metrics = learners.train_sft(mix(warmup_batch(described, restating, w.batch_size,
                                                          w.restate_share, rng)))
            tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step + 1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if held_out:
            losses.append(held_out_loss(learners, held_out, classes, fields, copies))
            tracker.log_metrics({"eval/loss_before": losses[0]["all"], **eval_metrics(losses[-1])},
                                w.steps)
        learners.save(out)
        tracker.register_model(out)
        status = "FINISHED"
    finally:
        tracker.finish(status)
        if learners is not None:
            learners.shutdown()
    return {"model": out, "steps": w.steps, "copying": copying,
            "train_sequences": len(described) + len(restating),
            "held_out_sequences": len(held_out), "eval_loss": [l["all"] for l in losses],
            "eval_loss_by_class": losses,  # token classes, then the captions' facts
            "tracking_run_id": tracker.run_id,
            "model_version": tracker.model_version}
