"""SFT samples (cold start, RFT): each assistant turn trained under the exact context the model
sees at inference, i.e. the per-turn contexts of DESIGN.md §3 built by the same code as rollouts
(`episodes.replay`), packed where nothing was dropped, labels on generated tokens only."""
from __future__ import annotations

from typing import List, Optional

from vrt_ray.data import PreferencePair
from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, EpisodeInput, format_turn
from vrt_ray.trajectory import PackedSequence, Trajectory

IGNORE = -100


def trace_texts(trace: dict, preset: Preset) -> List[str]:
    """The assistant turns of a protocol-neutral trace, in the preset's syntax."""
    return [format_turn(preset, t["think"], t.get("tool_call"), t.get("answer"))
            for t in trace["turns"]]


def trace_trajectory(processor, pair: PreferencePair, videos: dict, num_frames: dict, trace: dict,
                     preset: Preset, budgets: Budgets, pixels: PixelBudget,
                     cache: Optional[FrameCache] = None) -> Trajectory:
    """Replay a teacher trace through the protocol: the contexts an engine would have seen."""
    job = EpisodeJob(EpisodeInput(pair.id, pair.prompt, videos, num_frames))
    return replay(processor, job, preset, budgets, pixels, trace_texts(trace, preset), cache)


def labels(seq: PackedSequence) -> List[int]:
    """Next-token labels: the token id on generated (assistant) positions, IGNORE elsewhere, so
    system, user, tool-result, stub and image tokens never carry a label."""
    return [t if a else IGNORE for t, a in zip(seq.input_ids, seq.action_mask)]


class TraceError(ValueError):
    """A teacher trace that cannot be replayed under the run's protocol settings."""


def check_initial_view(trajectory: Trajectory, trace: dict) -> None:
    """The replay must show the frames the teacher saw first: a trace written for other
    `protocol.initial_frames` would teach sentences about frames the student never sees."""
    shown: dict = {}
    for _, refs in (trajectory.turns[0].visuals if trajectory.turns else []):
        for ref in refs:
            shown.setdefault(ref.video, []).append(ref.index)
    expected = {video: list(frames) for video, frames in trace.get("initial", {}).items()}
    if expected and shown != expected:
        raise TraceError(f"trace {trace['pair_id']}: its initial view {expected} differs from the "
                         f"replay's {shown}; generate the traces with the run's "
                         f"protocol.initial_frames")
