"""`RolloutWorker`: a Ray actor holding one generation engine; it runs whole episodes (tool calls
executed here, between turns, through this process's frame cache) and returns trajectories."""
from __future__ import annotations

from typing import Dict, List, Sequence

import ray


@ray.remote
class RolloutWorker:
    def __init__(self, cfg: dict, model_dir: str, seed: int = 0):
        from omegaconf import OmegaConf

        from vrt_ray.judge import Judge

        self.cfg = OmegaConf.create(cfg)
        self.judge = Judge.load(model_dir, self.cfg)
        self.judge.engine.generator_seed = seed

    def policy_version(self) -> int:
        return self.judge.engine.policy_version

    def run(self, jobs: Sequence[dict], temperature: float) -> List[dict]:
        """Episodes for `jobs` ({pair_id, prompt, videos, num_frames, sample_index}) as
        trajectory dicts, in job order."""
        from vrt_ray.engines.base import SamplingParams
        from vrt_ray.episodes import EpisodeJob, run_episodes
        from vrt_ray.frame_cache import default_cache
        from vrt_ray.model_inputs import PixelBudget
        from vrt_ray.preset import load_preset
        from vrt_ray.protocol import Budgets, EpisodeInput

        cfg = self.cfg
        episode_jobs = [EpisodeJob(EpisodeInput(j["pair_id"], j["prompt"], j["videos"],
                                                j["num_frames"]), j["sample_index"]) for j in jobs]
        sampling = SamplingParams(temperature=temperature, top_p=cfg.rollout.sampling.top_p,
                                  top_k=cfg.rollout.sampling.top_k,
                                  max_new_tokens=cfg.protocol.max_new_tokens)
        trajectories = run_episodes(
            self.judge.engine, episode_jobs, load_preset(cfg.protocol.preset),
            Budgets.from_config(cfg.protocol), sampling,
            PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend),
            max_batch=cfg.rollout.max_batch, max_context_tokens=cfg.protocol.max_context_tokens,
            cache=default_cache(cfg.video.cache_mb * 2**20))
        return [t.to_dict() for t in trajectories]

    def load_weights(self, state_dict: Dict, version: int) -> int:
        """Load the learner's weights in place (no engine re-creation); returns the version."""
        model = self.judge.engine.model
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if unexpected:
            raise ValueError(f"unexpected weights: {sorted(unexpected)[:5]}")
        self.judge.engine.policy_version = version
        return version
