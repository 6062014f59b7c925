"""SFT samples (cold start, RFT): each assistant turn trained under the exact context the model
sees at inference, i.e. the per-turn contexts of DESIGN.md §3 built by the same code as rollouts
(`episodes.replay`), packed where nothing was dropped, labels on generated tokens only.

Slips: a teacher never errs, so a student that once writes a broken tool call has never seen
what follows the tool's error. `add_slip` writes one of a trace's calls first wrong (a `slip`
turn), then whole again after the error; the slip turn is replayed, so the retry is trained
under the error message, but it carries no labels: the student learns to recover, not to slip.
Two kinds, the student's two commonest errors: `cut`, the call cut off after some of its frames
with its JSON unclosed; `range`, the call asking for frames past the video's last one.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import List, Mapping, Optional, Sequence

import numpy as np

from vrt_ray.data import PreferencePair
from vrt_ray.episodes import EpisodeJob, replay
from vrt_ray.frame_cache import FrameCache
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.preset import Preset
from vrt_ray.protocol import Budgets, EpisodeInput, format_turn
from vrt_ray.token_loss import turn_positions
from vrt_ray.trajectory import PackedSequence, Trajectory

IGNORE = -100
NOTE_HEAD = re.compile(r"\b[A-Z] (\d+):")  # a note's frame label, `A 19:`; group 1 the frame


RETRY_THINK = "That call was cut short. Writing it again, whole."
RANGE_RETRY_THINK = "Video {video} has frames 1 to {last}. Asking again within them."
SLIP_KINDS = ("cut", "range")


def add_slip(trace: dict, rng: np.random.Generator, max_turns: int, kind: str = "cut",
             num_frames: Optional[Mapping[str, int]] = None) -> dict:
    """A copy of `trace` in which one tool call, chosen by `rng`, is first written wrong (a
    `slip` turn) and then again whole: `cut` writes it cut off after some of its frames,
    `range` with some of its last frames moved past the video's end (`num_frames`, video ->
    frame count, needed). A trace whose calls already use every turn of `max_turns` (a slip
    counts as one) comes back unchanged."""
    if kind not in SLIP_KINDS:
        raise ValueError(f"slip kind {kind!r}: expected one of {SLIP_KINDS}")
    if kind == "range" and num_frames is None:
        raise ValueError("a `range` slip needs the videos' frame counts (num_frames)")
    calls = [i for i, t in enumerate(trace["turns"]) if "tool_call" in t]
    if not calls or len(calls) >= max_turns:
        return trace
    i = calls[int(rng.integers(len(calls)))]
    turn = trace["turns"][i]
    frames = list(turn["tool_call"]["target_frames"])
    kept = int(rng.integers(1, len(frames) + 1))
    think = RETRY_THINK
    if kind == "range":
        video = turn["tool_call"].get("video", "")
        last = num_frames[video]
        past = sorted({int(f) for f in rng.integers(last + 1, last + 1 + max(8, last // 2),
                                                    size=len(frames) - kept + 1)})
        frames, think = frames[:kept - 1] + past, RANGE_RETRY_THINK.format(video=video, last=last)
    else:
        frames = frames[:kept]
    retry = {"think": think, "tool_call": turn["tool_call"]}
    slip = {**turn, "slip": kind, "slip_frames": frames}
    return {**trace, "turns": trace["turns"][:i] + [slip, retry] + trace["turns"][i + 1:]}


def trace_texts(trace: dict, preset: Preset) -> List[str]:
    """The assistant turns of a protocol-neutral trace, in the preset's syntax."""
    return [_slip_text(preset, t) if "slip" in t else
            format_turn(preset, t["think"], t.get("tool_call"), t.get("answer"))
            for t in trace["turns"]]


def _slip_text(preset: Preset, turn: dict) -> str:
    """The turn with its call asking for the slip's frames; a `cut` one's JSON left unclosed."""
    call = dict(turn["tool_call"], target_frames=turn["slip_frames"])
    whole = format_turn(preset, turn["think"], call)
    if turn["slip"] != "cut":
        return whole
    return whole[:-len(preset.tool_close)].rstrip("}]") + preset.tool_close


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


def frame_label_positions(tokenizer, ids: Sequence[int], positions: Sequence[int]) -> List[int]:
    """Those of `positions` (one turn's tokens, in order) whose token holds a digit of a note's
    frame label (`NOTE_HEAD`) in the turn's text."""
    text, spans = "", []
    for p in positions:
        start = len(text)
        text += tokenizer.decode([ids[p]])
        spans.append((start, len(text), p))
    digits = {i for m in NOTE_HEAD.finditer(text) for i in range(*m.span(1))}
    return [p for start, end, p in spans if digits.intersection(range(start, end))]


def frame_label_digits(seq: PackedSequence, tokenizer) -> List[int]:
    """The positions of the frame labels' digits in `seq`'s turns after the trajectory's first
    (those of the first restate the initial view, no tool result)."""
    return [p for turn, positions in turn_positions(seq).items() if turn > 0
            for p in frame_label_positions(tokenizer, seq.input_ids, positions)]


def frame_label_sequence(seq: PackedSequence, tokenizer) -> Optional[PackedSequence]:
    """`seq` with its action mask (so its labels) on `frame_label_digits` alone; None when it
    has none."""
    keep = set(frame_label_digits(seq, tokenizer))
    if not keep:
        return None
    return replace(seq, action_mask=[p in keep for p in range(len(seq.input_ids))])
