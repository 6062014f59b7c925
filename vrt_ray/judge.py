"""Judge one pair of videos with a checkpoint: the Python API behind `vrt-ray judge` (and the
same episode runner that rollouts, evaluation and serving use)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

from omegaconf import DictConfig

from vrt_ray.engines.base import Engine, SamplingParams
from vrt_ray.engines.factory import build_engine
from vrt_ray.episodes import EpisodeJob, run_episodes
from vrt_ray.frame_cache import FrameCache, default_cache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.preset import load_preset
from vrt_ray.protocol import Budgets, EpisodeInput
from vrt_ray.trajectory import Trajectory
from vrt_ray.video import VideoError, open_video


@dataclass
class Judge:
    """A loaded judge: policy, processor, preset and budgets from a run config."""

    engine: Engine
    cfg: DictConfig

    @classmethod
    def load(cls, model_dir: str, cfg: DictConfig, seed: Optional[int] = None,
             policy_version: int = 0) -> "Judge":
        """The engine of `rollout.engine` over `model_dir`."""
        return cls(build_engine(model_dir, cfg, cfg.seed if seed is None else seed,
                                policy_version), cfg)

    def judge(self, prompt: str, video_a: str, video_b: str, pair_id: str = "judge",
              temperature: float = 0.0) -> Trajectory:
        """One episode on the pair; raises VideoError when a video cannot be read."""
        counts = frame_counts({"A": video_a, "B": video_b}, self.cfg.video.backend)
        job = EpisodeJob(EpisodeInput(pair_id, prompt, {"A": str(video_a), "B": str(video_b)},
                                      counts))
        (trajectory,) = self.episodes([job], temperature)
        return trajectory

    def episodes(self, jobs: Sequence[EpisodeJob], temperature: float = 0.0,
                 max_turns: Optional[int] = None, max_batch: int = 8,
                 cache: Optional[FrameCache] = None,
                 timings: Optional[Dict[str, float]] = None) -> List[Trajectory]:
        """`jobs` through the shared episode runner with the config's protocol, pixel budget
        and sampling at `temperature` (0: greedy); `max_turns` lowers the turn budget; the
        frame cache defaults to the process-wide one."""
        cfg = self.cfg
        budgets = Budgets.from_config(cfg.protocol)
        if max_turns is not None:
            budgets = replace(budgets, max_turns=max_turns)
        sampling = SamplingParams(temperature=temperature, top_p=cfg.rollout.sampling.top_p,
                                  top_k=cfg.rollout.sampling.top_k,
                                  max_new_tokens=cfg.protocol.max_new_tokens)
        pixels = PixelBudget(cfg.video.min_pixels, cfg.video.max_pixels, cfg.video.backend)
        return run_episodes(
            self.engine, jobs, load_preset(cfg.protocol.preset), budgets, sampling, pixels,
            max_batch=max_batch, max_context_tokens=cfg.protocol.max_context_tokens,
            cache=default_cache(cfg.video.cache_mb * 2**20) if cache is None else cache,
            timings=timings)


def known_frame_counts(videos: Dict[str, str], backend: str,
                       known: Dict[str, Optional[int]]) -> Optional[Dict[str, int]]:
    """Frame count of each video, or None when one cannot be opened; `known` (path -> count,
    None for unreadable) is read first and filled, so each file is opened once."""
    for path in videos.values():
        if path not in known:
            try:
                with open_video(path, backend=backend) as reader:
                    known[path] = reader.info.num_frames
            except VideoError:
                known[path] = None
    counts = {name: known[path] for name, path in videos.items()}
    return None if None in counts.values() else counts


def frame_counts(videos: Dict[str, str], backend: str = "pyav") -> Dict[str, int]:
    """Frame count of each video; raises VideoError naming the file that cannot be read."""
    counts = {}
    for name, path in videos.items():
        with open_video(path, backend=backend) as reader:
            counts[name] = reader.info.num_frames
    return counts


def verdict_table(trajectory: Trajectory, dimensions) -> Dict[str, Optional[str]]:
    """Every asked dimension and overall, None where the model gave no verdict."""
    return {d: trajectory.verdicts.get(d) for d in (*dimensions, "overall")}
