"""`RolloutWorker`: a Ray actor holding one generation engine; it runs whole episodes (tool calls
executed here, between turns, through this process's frame cache) and returns trajectories."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import ray


@ray.remote
class RolloutWorker:
    def __init__(self, cfg: dict, model_dir: str, seed: int = 0, policy_version: int = 0):
        from omegaconf import OmegaConf

        from vrt_ray.frame_cache import default_cache
        from vrt_ray.judge import Judge

        self.cfg = OmegaConf.create(cfg)
        self.judge = Judge.load(model_dir, self.cfg, seed=seed, policy_version=policy_version)
        self.cache = default_cache(self.cfg.video.cache_mb * 2**20)
        self.frame_counts: Dict[str, Optional[int]] = {}  # path -> count, None: unreadable
        self.transfer = None  # (host, port, group) of the weight-transfer group joined

    def policy_version(self) -> int:
        return self.judge.engine.policy_version

    def run(self, jobs: Sequence[dict], temperature: float) -> dict:
        """Episodes for `jobs` ({pair_id, prompt, videos, sample_index}, optionally num_frames):
        {"trajectories": trajectory dicts in job order, "timings": seconds preparing prompts,
        generating and running tools}. A pair whose video cannot be opened yields trajectories
        that end before their first turn, saying why."""
        from vrt_ray.episodes import EpisodeJob
        from vrt_ray.protocol import EpisodeInput

        episode_jobs = [EpisodeJob(EpisodeInput(j["pair_id"], j["prompt"], j["videos"],
                                                j.get("num_frames") or self._counts(j["videos"])),
                                   j["sample_index"]) for j in jobs]
        timings: Dict[str, float] = {}
        trajectories = self.judge.episodes(episode_jobs, temperature,
                                           max_batch=self.cfg.rollout.max_batch,
                                           cache=self.cache, timings=timings)
        return {"trajectories": [t.to_dict() for t in trajectories], "timings": timings}

    def _counts(self, videos: Dict[str, str]) -> Dict[str, int]:
        """Frame counts, read once per file by this worker; an unreadable file counts 1 frame
        (its episodes then end on the initial view with the reader's error)."""
        from vrt_ray.judge import known_frame_counts

        counts = known_frame_counts(videos, self.cfg.video.backend, self.frame_counts)
        return counts or {name: 1 for name in videos}

    def cache_stats(self) -> dict:
        c = self.cache
        return {"hits": c.hits, "misses": c.misses, "decoded_frames": c.decoded_frames,
                "decoded_by_file": dict(c.decoded_by_file)}

    def load_weights(self, state_dict: Dict, version: int) -> int:
        """Load the learner's weights in place (no engine re-creation); returns the version."""
        self.judge.engine.update_weights(state_dict.items(), version)
        return version

    def receive_weights(self, host: str, port: int, rank: int, world_size: int, version: int,
                        timeout_s: float) -> int:
        """Join (once per group address) the learner's weight-transfer group and load the
        weights rank 0 broadcasts; returns the version."""
        from vrt_ray.weight_transport import open_group, receive_state

        if self.transfer is None or self.transfer[:2] != (host, port):
            self.transfer = (host, port, open_group(host, port, rank, world_size, timeout_s))
        return self.load_weights(receive_state(self.transfer[2]), version)
