"""`vrt-ray rft CONFIG [key=value ...]`: rejection-sampling fine-tuning. The rollout workers
sample `rft.samples_per_pair` episodes of every training pair (or of a seeded `rft.pairs` of
them) at `rft.temperature`; the verifier
keeps those it marks `all_correct` (format, every labelled dimension and overall right); copies
with the same generated text are dropped; the learner group fine-tunes on the rest with the same
SFT code as the cold start. The keep rate per dimension and overall is logged."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import ray
from omegaconf import DictConfig
from tqdm import tqdm

from actors.learner import LearnerGroup
from actors.rollout_pool import RolloutPool
from actors.verifier import RewardVerifier
from jobs.grpo import start_ray, training_pairs
from vrt_ray.learner_core import train_sequences
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.rewards import score_rates
from vrt_ray.models import load_policy, load_processor, save_checkpoint
from vrt_ray.tracking import Tracker
from vrt_ray.trajectory import Trajectory

PAIRS_PER_CALL = 16  # pairs submitted together (the progress bar moves per call)


def select(trajectories: Sequence[dict], scores: Sequence[dict]) -> List[Trajectory]:
    """The all-correct trajectories, one per distinct generated text of a pair."""
    kept, seen = [], set()
    for t, s in zip(trajectories, scores):
        key = (t["pair_id"], tuple(tuple(turn["token_ids"]) for turn in t["turns"]))
        if s["all_correct"] and key not in seen:
            seen.add(key)
            kept.append(Trajectory.from_dict(t))
    return kept


def sampled_pairs(pairs: Sequence, count: int, seed: int) -> list:
    """`count` of the pairs (all when 0 or more than there are), a seeded choice in file order."""
    if not count or count >= len(pairs):
        return list(pairs)
    chosen = set(random.Random(seed).sample(range(len(pairs)), count))
    return [p for i, p in enumerate(pairs) if i in chosen]


def sample(cfg: DictConfig, model_dir: str, pairs) -> tuple:
    """k episodes of every pair and their scores."""
    pool = RolloutPool(cfg, model_dir)
    verifier = RewardVerifier.options(num_cpus=cfg.verifier.num_cpus).remote(
        cfg.verifier, list(cfg.protocol.dimensions))
    labels = {p.id: dict(p.labels) for p in pairs}
    trajectories, scores = [], []
    try:
        bar = tqdm(total=len(pairs) * cfg.rft.samples_per_pair, desc="rft sampling",
                   unit="episode")
        for i in range(0, len(pairs), PAIRS_PER_CALL):
            chunk = pairs[i:i + PAIRS_PER_CALL]
            done = pool.wait(pool.submit(
                [{"pair_id": p.id, "prompt": p.prompt, "videos": {"A": p.video_a, "B": p.video_b}}
                 for p in chunk], cfg.rft.samples_per_pair, cfg.rft.temperature))
            trajectories += done
            scores += ray.get(verifier.score.remote(done, {p.id: labels[p.id] for p in chunk}))
            bar.update(len(done))
        bar.close()
    finally:
        pool.shutdown()
        ray.kill(verifier)
    return trajectories, scores


def main(cfg: DictConfig, model_dir: Optional[str] = None, out: Optional[str] = None) -> Dict:
    """Sample, filter and fine-tune `model_dir` (default `model.path`); writes the policy to
    `out` (default `<output_dir>/rft`) and returns a summary."""
    model_dir = model_dir or cfg.model.path
    out = out or str(Path(cfg.output_dir) / "rft")
    pairs = sampled_pairs(training_pairs(cfg), cfg.rft.pairs, cfg.seed)
    start_ray(cfg)
    tracker = Tracker(cfg, run_name=f"{cfg.name}-rft")
    status = "FAILED"
    try:
        trajectories, scores = sample(cfg, model_dir, pairs)
        kept = select(trajectories, scores)
        rates = score_rates(scores, list(cfg.protocol.dimensions))
        tracker.log_metrics({**{f"keep_rate/{k}": v for k, v in rates.items()},
                             "kept_trajectories": len(kept)}, 0)
        steps = _fine_tune(cfg, model_dir, out, kept, tracker) if kept else 0
        if not kept:  # nothing to learn from: the policy goes on unchanged
            save_checkpoint(out, load_policy(model_dir),
                            load_processor(model_dir, cfg.video.min_pixels, cfg.video.max_pixels))
        tracker.register_model(out)
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return {"model": out, "samples": len(trajectories), "kept": len(kept), "steps": steps,
            "keep_rate": rates, "tracking_run_id": tracker.run_id,
            "model_version": tracker.model_version}


def _fine_tune(cfg: DictConfig, model_dir: str, out: str, kept: List[Trajectory],
               tracker: Tracker) -> int:
    r = cfg.rft
    samples = [train_sequences(t) for t in kept]
    per_epoch = -(-len(samples) // r.batch_size)
    pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
    learners = LearnerGroup(cfg.learner, model_dir, total_steps=r.epochs * per_epoch,
                            pixels=pixels, lr=r.lr)
    step = 0
    try:
        bar = tqdm(total=r.epochs * per_epoch, desc="rft fine-tune", unit="step")
        for epoch in range(r.epochs):
            order = random.Random(cfg.seed + epoch).sample(range(len(samples)), len(samples))
            for i in range(0, len(order), r.batch_size):
                metrics = learners.train_sft([s for j in order[i:i + r.batch_size]
                                              for s in samples[j]])
                step += 1
                tracker.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step)
                bar.update(1)
        bar.close()
        learners.save(out)
    finally:
        learners.shutdown()
    return step
