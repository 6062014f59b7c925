"""SFT samples (cold start, RFT): each assistant turn trained under the exact context the model
sees at inference, i.e. the per-turn contexts of DESIGN.md §3 built by the same code as rollouts
(`episodes.replay`), packed where nothing was dropped, labels on generated tokens only.

Slips: a teacher never errs, so a student that once writes a broken tool call has never seen
what follows the tool's error. `add_slip` writes one of a trace's calls first cut short (a
`slip` turn), then whole again after the error; the slip turn is replayed, so the retry is
trained under the error message, but it carries no labels: the student learns to recover, not
to slip.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from vrt_ray.data import PreferencePair
from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, EpisodeInput, format_turn
from vrt_ray.trajectory import PackedSequence, Trajectory

IGNORE = -100


RETRY_THINK = "That call was cut short. Writing it again, whole."


def add_slip(trace: dict, rng: np.random.Generator, max_turns: int) -> dict:
    """A copy of `trace` in which one tool call, chosen by `rng`, is first written cut off after
    some of its frames (a `slip` turn) and then again whole. A trace whose calls already use
    every turn of `max_turns` (a slip counts as one) comes back unchanged."""
    calls = [i for i, t in enumerate(trace["turns"]) if "tool_call" in t]
    if not calls or len(calls) >= max_turns:
        return trace
    i = calls[int(rng.integers(len(calls)))]
    turn = trace["turns"][i]
    kept = int(rng.integers(1, len(turn["tool_call"]["target_frames"]) + 1))
    retry = {"think": RETRY_THINK, "tool_call": turn["tool_call"]}
    turns = trace["turns"][:i] + [{**turn, "slip": kept}, retry] + trace["turns"][i + 1:]
    return {**trace, "turns": turns}


def trace_texts(trace: dict, preset: Preset) -> List[str]:
    """The assistant turns of a protocol-neutral trace, in the preset's syntax."""
    return [_slip_text(preset, t) if "slip" in t else
            format_turn(preset, t["think"], t.get("tool_call"), t.get("answer"))
            for t in trace["turns"]]


def _slip_text(preset: Preset, turn: dict) -> str:
    """The turn's call with only its first `slip` frames and its JSON left unclosed."""
    call = dict(turn["tool_call"], target_frames=turn["tool_call"]["target_frames"][:turn["slip"]])
    whole = format_turn(preset, turn["think"], call)
    cut = whole[:-len(preset.tool_close)].rstrip("}]")
    return cut + preset.tool_close


def trace_trajectory(processor, pair: PreferencePair, videos: dict, num_frames: dict, trace: dict,
                     preset: Preset, budgets: Budgets, pixels: PixelBudget,
                     cache: Optional[FrameCache] = None) -> Trajectory:
    """Replay a teacher trace through the protocol: the contexts an engine would have seen.
    Slip turns are replayed (the next turn's context holds them and the tool's error) but left
    out of the trajectory's turns, so they carry no labels."""
    job = EpisodeJob(EpisodeInput(pair.id, pair.prompt, videos, num_frames))
    trajectory = replay(processor, job, preset, budgets, pixels, trace_texts(trace, preset), cache)
    trajectory.turns = [turn for turn, step in zip(trajectory.turns, trace["turns"])
                        if "slip" not in step]
    return trajectory


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
