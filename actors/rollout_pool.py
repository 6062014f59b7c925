"""The rollout workers of a run, seen from the driver: `submit` hands out a batch's episodes (the
G episodes of a pair to one worker, so its frame cache serves them all), `wait` collects them,
and `sync` brings every worker to the learner's new weights.

Faults (DESIGN.md §4): every episode is recorded in an `EpisodeJournal`. A call that fails
because its worker died, or that has not answered within `rollout.timeout_s` (the worker is then
killed), has its unfinished episodes re-issued to the same worker once Ray restarted it and it
was given the current weights. A step gets every episode exactly once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import ray
from omegaconf import DictConfig, OmegaConf

from actors.rollout import RolloutWorker
from vrt_ray.errors import VrtError
from vrt_ray.journal import EpisodeJournal, EpisodeKey

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # issues of one episode before the step gives up


class RolloutFailed(VrtError):
    """An episode could not be completed within MAX_ATTEMPTS issues."""


@dataclass
class PendingRollout:
    """A submitted batch: its calls in flight, its journal and what came back."""

    order: List[EpisodeKey]
    temperature: float
    journal: EpisodeJournal = field(default_factory=EpisodeJournal)
    # call -> (worker, its episodes, the time by which it must answer)
    calls: Dict[ray.ObjectRef, Tuple[int, List[dict], float]] = field(default_factory=dict)
    results: Dict[EpisodeKey, dict] = field(default_factory=dict)
    failures: int = 0  # calls lost to a dead or hung worker
    timings: Dict[str, float] = field(default_factory=dict)  # the workers' seconds, summed


class RolloutPool:
    def __init__(self, cfg: DictConfig, model_dir: str, policy_version: int = 0):
        rc = cfg.rollout
        self.timeout_s = float(rc.timeout_s)
        self.max_batch = int(rc.max_batch)
        self.restart_timeout_s = float(rc.restart_timeout_s)
        plain = OmegaConf.to_container(cfg, resolve=True)
        self.workers = [
            RolloutWorker.options(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus,
                                  max_restarts=rc.max_restarts, max_task_retries=0)
            .remote(plain, model_dir, seed=cfg.seed + i, policy_version=policy_version)
            for i in range(rc.num_workers)]
        self.version = policy_version
        self.weights_ref: Optional[ray.ObjectRef] = None  # the latest weights, once synced
        self.fetch_weights: Optional[Callable[[], ray.ObjectRef]] = None  # when not kept
        self.stale: set = set()  # restarted workers that need the current weights
        self.transfer: Optional[Tuple[str, int]] = None  # gloo transfer group, while intact
        self.lost_calls = 0  # over the pool's life

    def ready(self) -> List[int]:
        """Every worker's policy version (waits for the engines to load)."""
        return ray.get([w.policy_version.remote() for w in self.workers])

    # -- rollouts -------------------------------------------------------------------------
    def submit(self, pairs: Sequence[dict], group_size: int, temperature: float) -> PendingRollout:
        """Start `group_size` episodes of each pair ({pair_id, prompt, videos}, optionally
        num_frames: else the worker reads them); pair i of the
        batch goes to worker i mod N. A pair named twice (a batch across an epoch boundary of a
        small dataset) gets sample indices after its first group's: one group of 2G."""
        by_worker: Dict[int, List[dict]] = {}
        order: List[EpisodeKey] = []
        seen: Dict[str, int] = {}
        for i, pair in enumerate(pairs):
            first = seen.get(pair["pair_id"], 0)
            seen[pair["pair_id"]] = first + group_size
            for k in range(first, first + group_size):
                by_worker.setdefault(i % len(self.workers), []).append(
                    {"pair_id": pair["pair_id"], "prompt": pair["prompt"],
                     "videos": pair["videos"], "num_frames": pair.get("num_frames"),
                     "sample_index": k})
                order.append((pair["pair_id"], k))
        pending = PendingRollout(order, temperature)
        for w, jobs in by_worker.items():
            self._issue(pending, w, jobs)
        return pending

    def wait(self, pending: PendingRollout) -> List[dict]:
        """Every trajectory of the batch, in submission order (pair by pair, sample by sample)."""
        while pending.calls:
            first = min(deadline for _, _, deadline in pending.calls.values())
            left = max(0.0, first - time.monotonic())
            ready, _ = ray.wait(list(pending.calls), num_returns=1, timeout=left)
            if ready:
                self._collect(pending, ready[0])
                continue
            now = time.monotonic()
            for ref, (w, jobs, deadline) in list(pending.calls.items()):
                if now >= deadline:
                    log.warning("rollout worker %d gave no answer to %d episodes in time: "
                                "restarting it", w, len(jobs))
                    del pending.calls[ref]
                    ray.kill(self.workers[w], no_restart=False)
                    self._reissue(pending, w, jobs)
        return [pending.results[key] for key in pending.order]

    def _collect(self, pending: PendingRollout, ref: ray.ObjectRef) -> None:
        w, jobs, _ = pending.calls.pop(ref)
        try:
            answer = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            log.warning("rollout worker %d died (%s): re-issuing its episodes", w,
                        type(exc).__name__)
            self._reissue(pending, w, jobs)
            return
        for stage, seconds in answer["timings"].items():
            pending.timings[stage] = pending.timings.get(stage, 0.0) + seconds
        for t in answer["trajectories"]:
            key = (t["pair_id"], t["sample_index"])
            if pending.journal.complete(key):
                pending.results[key] = t

    def _reissue(self, pending: PendingRollout, w: int, jobs: List[dict]) -> None:
        pending.failures += 1
        self.lost_calls += 1
        self.stale.add(w)
        self.transfer = None  # a group member is gone: the next gloo sync builds a new group
        unfinished = set(pending.journal.unfinished(w))
        jobs = [j for j in jobs if (j["pair_id"], j["sample_index"]) in unfinished]
        for j in jobs:
            key = (j["pair_id"], j["sample_index"])
            if pending.journal.entries[key].attempts >= MAX_ATTEMPTS:
                raise RolloutFailed(f"episode {key} failed {MAX_ATTEMPTS} times on rollout "
                                    f"worker {w}; giving up (see the worker's log)")
        if jobs:
            self._issue(pending, w, jobs)

    def _issue(self, pending: PendingRollout, w: int, jobs: List[dict]) -> None:
        if w in self.stale:
            self._bring_up_to_date(w)
        ref = self.workers[w].run.remote(jobs, pending.temperature)
        for j in jobs:
            pending.journal.issue((j["pair_id"], j["sample_index"]), w, self.version)
        batches = -(-len(jobs) // self.max_batch)  # the engine runs max_batch at a time
        pending.calls[ref] = (w, jobs, time.monotonic() + self.timeout_s * batches)

    def _bring_up_to_date(self, w: int) -> None:
        """A restarted worker came back with the weights it was created with: give it the
        current ones (waits for the restart, within `rollout.restart_timeout_s`)."""
        worker = self.workers[w]
        deadline = time.monotonic() + self.restart_timeout_s
        while True:  # calls are refused, or wait, while Ray restarts the actor and it loads
            try:
                version = ray.get(worker.policy_version.remote(),
                                  timeout=max(deadline - time.monotonic(), 0.0))
                break
            except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                if time.monotonic() >= deadline:
                    raise RolloutFailed(f"rollout worker {w} did not come back within "
                                        f"{self.restart_timeout_s:.0f} s") from None
                time.sleep(0.5)
        if version != self.version:
            ref = self.weights_ref or (self.fetch_weights() if self.fetch_weights else None)
            if ref is None:
                raise RolloutFailed(f"rollout worker {w} restarted and no weights of version "
                                    f"{self.version} are at hand")
            ray.get(worker.load_weights.remote(ref, self.version), timeout=self.timeout_s)
        self.stale.discard(w)

    # -- weights --------------------------------------------------------------------------
    def sync(self, learners, version: int, method: str) -> float:
        """Every worker to the learner group's current weights as `version`; the seconds taken.
        `object_store`: rank 0's state dict is put once and each worker loads it; `gloo`: rank 0
        broadcasts it over a transfer group with the workers (rebuilt after a restart)."""
        started = time.perf_counter()
        if method == "object_store":
            ref = learners.weights_ref()
            calls = [w.load_weights.remote(ref, version) for w in self.workers]
            self.weights_ref = ref
        else:
            if self.transfer is None:
                self.transfer = learners.transfer_address()
            host, port = self.transfer
            size = len(self.workers) + 1
            calls = learners.send_weights(host, port, size, self.timeout_s) + [
                w.receive_weights.remote(host, port, i + 1, size, version, self.timeout_s)
                for i, w in enumerate(self.workers)]
            self.weights_ref = None
            self.fetch_weights = learners.weights_ref
        self.version = version
        try:
            ray.get(calls, timeout=self.timeout_s)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                ray.exceptions.GetTimeoutError) as exc:
            # a worker died or hung while syncing: every worker is checked (and given the
            # weights if it lacks them) before its next episodes
            log.warning("weight sync incomplete (%s): checking the workers before their next "
                        "episodes", type(exc).__name__)
            self.transfer = None
            self.stale.update(range(len(self.workers)))
            if self.weights_ref is None:
                self.weights_ref = learners.weights_ref()
        return time.perf_counter() - started

    def cache_stats(self) -> List[dict]:
        return ray.get([w.cache_stats.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
