"""`vrt-ray grpo CONFIG [key=value ...] [--resume]`: GRPO on Ray, the loop of DESIGN.md §3.

    rollout -> verify -> reference -> advantages -> learn -> sync -> log -> checkpoint

With `grpo.overlap`, the rollouts of step t+1 are submitted before step t learns (they run on
the weights of step t-1: one-step off-policy; the importance ratio uses the log-probs of the
version that sampled them).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import ray
from omegaconf import DictConfig
from tqdm import tqdm

from actors.learner import LearnerGroup
from actors.reference import ReferencePolicy
from actors.rollout_pool import RolloutPool
from actors.verifier import RewardVerifier
from vrt_ray import checkpoints
from vrt_ray.checkpoints import RunState
from vrt_ray.data.loaders import load_pairs
from vrt_ray.data.sampler import PairSampler
from vrt_ray.errors import VrtError
from vrt_ray.grpo_batch import build_batch, rollout_metrics
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.tracking import Tracker
from vrt_ray.trajectory import Trajectory

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(timings: Dict[str, float], stage: str):
    started = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - started


def start_ray(cfg: DictConfig) -> None:
    """Join `ray.address`, or the cluster a Ray job runs on (RAY_ADDRESS), else start a local
    Ray with `ray.num_cpus`."""
    if ray.is_initialized():
        return
    if cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=cfg.ray.address or None)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus or None, include_dashboard=False)


def training_pairs(cfg: DictConfig) -> list:
    report = load_pairs(Path(cfg.data.dir) / cfg.data.train, cfg.data.format,
                        cfg.data.video_root or None, strict=cfg.data.strict)
    if report.bad_rows or report.missing_videos:
        log.warning("%s: %d bad rows and %d pairs with missing videos skipped", report.path,
                    len(report.bad_rows), len(report.missing_videos))
    if not report.pairs:
        raise VrtError(f"{report.path}: no usable training pairs")
    return report.pairs


class GRPORun:
    """The actors of one run and the loop that drives them."""

    def __init__(self, cfg: DictConfig, resume: bool = False):
        self.cfg = cfg
        self.closed = False
        start_ray(cfg)
        self.pairs = training_pairs(cfg)
        self.sampler = PairSampler(len(self.pairs), cfg.seed)
        self.labels = {p.id: dict(p.labels) for p in self.pairs}
        checkpoint = checkpoints.latest(cfg.checkpointing.dir)
        if checkpoint and not resume:
            raise VrtError(f"{cfg.checkpointing.dir} holds checkpoints of an earlier run "
                           f"({checkpoint.name}): pass --resume to continue it, or choose "
                           f"another checkpointing.dir")
        self.state = checkpoints.read_state(checkpoint) if checkpoint else RunState(0, 0, 0)
        if checkpoint:
            log.info("resuming from step %d (%s), %d rollout workers", self.state.step,
                     checkpoint, cfg.rollout.num_workers)
        policy_dir = str(checkpoint / "policy") if checkpoint else cfg.model.path
        self.tracker = Tracker(cfg, run_name=f"{cfg.name}-grpo",
                               run_id=self.state.tracking_run_id or None)
        self.state.tracking_run_id = self.tracker.run_id
        pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
        self.learners = LearnerGroup(cfg.learner, policy_dir, total_steps=cfg.grpo.steps,
                                     pixels=pixels, grpo=cfg.grpo, lr=cfg.grpo.lr)
        if checkpoint:
            self.learners.load_state(str(checkpoint / "learner"))
        self.rollouts = RolloutPool(cfg, policy_dir, policy_version=self.state.policy_version)
        self.verifier = RewardVerifier.options(num_cpus=cfg.verifier.num_cpus).remote(
            cfg.verifier, list(cfg.protocol.dimensions))
        use_reference = cfg.grpo.beta > 0 and cfg.reference.num_workers > 0
        self.references = [  # the run's starting policy, also after a resume
            ReferencePolicy.options(num_cpus=cfg.reference.num_cpus,
                                    num_gpus=cfg.reference.num_gpus).remote(
                cfg.model.path, cfg.video.min_pixels, cfg.video.max_pixels, cfg.model.dtype,
                cfg.model.attn_implementation)
            for _ in range(cfg.reference.num_workers if use_reference else 0)]
        self.rollouts.ready()

    # -- one step's stages ------------------------------------------------------------------
    def submit(self, position: int):
        batch = [self.pairs[i] for i in self.sampler.batch(position, self.cfg.grpo.pairs_per_step)]
        jobs = [{"pair_id": p.id, "prompt": p.prompt, "videos": {"A": p.video_a, "B": p.video_b}}
                for p in batch]
        return self.rollouts.submit(jobs, self.cfg.grpo.group_size,
                                    self.cfg.rollout.sampling.temperature)

    def verify(self, trajectories: List[dict]) -> List[dict]:
        asked = {t["pair_id"] for t in trajectories}
        return ray.get(self.verifier.score.remote(trajectories,
                                                  {k: self.labels[k] for k in asked}))

    def reference_logprobs(self, items, temperature: float) -> Optional[list]:
        if not self.references or not items:
            return None
        n = len(self.references)
        parts = ray.get([r.logprobs.remote(items[i::n], temperature)
                         for i, r in enumerate(self.references)])
        out: list = [None] * len(items)
        for i, part in enumerate(parts):
            out[i::n] = part
        return out

    def checkpoint(self) -> Path:
        staging = checkpoints.begin(self.cfg.checkpointing.dir, self.state.step)
        self.learners.save(str(staging / "policy"))
        self.learners.save_state(str(staging / "learner"))
        return checkpoints.commit(staging, self.state, self.cfg.checkpointing.keep_last)

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> RunState:
        """Steps until `grpo.steps`, a checkpoint every `checkpointing.every_steps` and at the end."""
        g, state = self.cfg.grpo, self.state
        pending = self.submit(state.data_position) if state.step < g.steps else None
        bar = tqdm(total=g.steps, initial=state.step, desc="grpo", unit="step")
        while state.step < g.steps:
            metrics, pending = self.step(pending)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}",
                            kept=f"{metrics['kept_group_fraction']:.2f}")
            if state.step % self.cfg.checkpointing.every_steps == 0 or state.step == g.steps:
                started = time.perf_counter()
                self.checkpoint()
                self.tracker.log_metrics({"time/checkpoint_s": time.perf_counter() - started},
                                         state.step)
        bar.close()
        self.tracker.log_figure(reward_curve(self.tracker.history("reward_mean")),
                                "plots/reward_mean.png")
        self.tracker.register_model(checkpoints.latest(self.cfg.checkpointing.dir) / "policy")
        return state

    def step(self, pending):
        """One GRPO step on the submitted batch `pending`; returns its metrics and the next
        step's batch, already submitted (before learning when `grpo.overlap`)."""
        cfg, g, state = self.cfg, self.cfg.grpo, self.state
        more = state.step + 1 < g.steps
        timings: Dict[str, float] = {}
        started = time.perf_counter()
        with timed(timings, "rollout"):
            raw = self.rollouts.wait(pending)
        position = state.data_position + g.pairs_per_step
        following = self.submit(position) if g.overlap and more else None
        with timed(timings, "verify"):
            scores = self.verify(raw)
        trajectories = [Trajectory.from_dict(t) for t in raw]
        lag = state.policy_version - min(t.policy_version for t in trajectories)
        batch = build_batch(trajectories, [s["reward"] for s in scores], g.scale_by_std, g.eps,
                            g.drop_zero_variance)
        temperature = cfg.rollout.sampling.temperature or 1.0  # engines report T=1 when greedy
        with timed(timings, "reference"):
            ref_logprobs = self.reference_logprobs(batch.items, temperature)
        with timed(timings, "learn"):
            learned = (self.learners.train_grpo(batch.items, batch.advantages, ref_logprobs,
                                                temperature) if batch.items else {})
        if learned:
            state.policy_version = self.learners.version()
            with timed(timings, "sync"):
                self.rollouts.sync(self.learners, state.policy_version, cfg.rollout.weight_sync)
        state.step += 1
        state.data_position = position
        if following is None and more:
            following = self.submit(position)
        metrics = step_metrics(trajectories, scores, batch, learned, timings, pending,
                               list(cfg.protocol.dimensions))
        wall = time.perf_counter() - started
        metrics.update(policy_version=state.policy_version, policy_lag=lag, step_s=wall,
                       trajectories_per_s=len(trajectories) / wall)
        self.tracker.log_metrics(metrics, state.step)
        return metrics, following

    def shutdown(self, status: str = "FINISHED") -> None:
        """End the tracking run and release the actors (once; later calls do nothing)."""
        if self.closed:
            return
        self.closed = True
        self.tracker.finish(status)
        self.rollouts.shutdown()
        self.learners.shutdown()
        for actor in (self.verifier, *self.references):
            ray.kill(actor)


def step_metrics(trajectories, scores, batch, learned, timings, pending,
                 dimensions) -> Dict[str, float]:
    metrics = rollout_metrics(trajectories, scores, dimensions)
    metrics.update({f"learner/{k}": v for k, v in learned.items()})
    metrics.update(kept_group_fraction=batch.kept_groups / max(batch.groups, 1),
                   trajectories=len(trajectories), train_sequences=len(batch.items),
                   lost_rollout_calls=pending.failures)
    total = sum(timings.values())
    for stage, seconds in timings.items():
        metrics[f"time/{stage}_s"] = seconds
        metrics[f"time/{stage}_share"] = seconds / total if total else 0.0
    metrics.update({f"time/worker_{k}": v for k, v in pending.timings.items()})
    return metrics


def reward_curve(history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([s for s, _ in history], [v for _, v in history], marker="o", markersize=3)
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("mean reward")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def main(cfg: DictConfig, resume: bool = False) -> RunState:
    run = GRPORun(cfg, resume=resume)
    status = "FAILED"
    try:
        state = run.train()
        status = "FINISHED"
        return state
    finally:
        run.shutdown(status)
