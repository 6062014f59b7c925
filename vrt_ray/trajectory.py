"""Trajectories (DESIGN.md §3): per-turn contexts as the engine saw them, with frame references.

The visual memory window rewrites the past, so turn t+1's context is not an extension of turn
t's. Each `Turn` therefore keeps its own context (token ids + frame references); `to_sequences`
merges consecutive turns whose contexts do extend each other into one sequence with an action
mask on every generated span, so the common case costs one forward pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

from vrt_ray.protocol import FrameRef, Visual


@dataclass
class Turn:
    prompt_ids: List[int]
    visuals: List[Visual]  # ("image" | "video", frame refs) in text order
    token_ids: List[int]
    logprobs: List[float]
    finish_reason: str

    def to_dict(self) -> dict:
        return {"prompt_ids": self.prompt_ids, "token_ids": self.token_ids,
                "logprobs": self.logprobs, "finish_reason": self.finish_reason,
                "visuals": [[kind, [r.to_dict() for r in refs]] for kind, refs in self.visuals]}

    @classmethod
    def from_dict(cls, d: dict) -> "Turn":
        visuals = [(kind, tuple(FrameRef(**r) for r in refs)) for kind, refs in d["visuals"]]
        return cls(d["prompt_ids"], visuals, d["token_ids"], d["logprobs"], d["finish_reason"])


@dataclass
class Trajectory:
    pair_id: str
    sample_index: int
    policy_version: int
    preset: str
    videos: Dict[str, str]
    budget: Dict[str, object]  # min_pixels, max_pixels, backend
    turns: List[Turn] = field(default_factory=list)
    verdicts: Dict[str, str] = field(default_factory=dict)
    answer_complete: bool = False
    end_reason: str = ""
    valid_calls: int = 0
    invalid_calls: int = 0
    tool_failures: int = 0  # valid calls whose frames could not be decoded
    frames_fetched: int = 0
    turns_over_budget: int = 0
    outcomes: List[str] = field(default_factory=list)  # per assistant turn (Episode.outcomes)
    messages: List[dict] = field(default_factory=list)  # the full record, for reports

    def to_dict(self) -> dict:
        d = asdict(self)
        d["turns"] = [t.to_dict() for t in self.turns]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        d = dict(d)
        d["turns"] = [Turn.from_dict(t) for t in d["turns"]]
        return cls(**d)


@dataclass
class PackedSequence:
    """Consecutive turns as one sequence: `action_mask[i]` marks generated tokens."""

    input_ids: List[int]
    visuals: List[Visual]
    action_mask: List[bool]
    logprobs: List[Optional[float]]  # the engine's, on action positions; None elsewhere
    turn_indices: Tuple[int, ...]


def to_sequences(turns: List[Turn], pack: bool = True) -> List[PackedSequence]:
    """The turns as training sequences. With `pack`, turn t+1 joins turn t's sequence when its
    context starts with t's context and generation, token for token and visual for visual
    (nothing was dropped in between); without, one sequence per turn (the official code's
    one-sample-per-turn)."""
    packed: List[PackedSequence] = []
    for i, turn in enumerate(turns):
        last = packed[-1] if packed else None
        if pack and last is not None and _extends(last, turn):
            tail = turn.prompt_ids[len(last.input_ids):]
            last.input_ids += tail + turn.token_ids
            last.action_mask += [False] * len(tail) + [True] * len(turn.token_ids)
            last.logprobs += [None] * len(tail) + list(turn.logprobs)
            last.visuals = list(turn.visuals)
            last.turn_indices += (i,)
            continue
        packed.append(PackedSequence(
            input_ids=list(turn.prompt_ids) + list(turn.token_ids), visuals=list(turn.visuals),
            action_mask=[False] * len(turn.prompt_ids) + [True] * len(turn.token_ids),
            logprobs=[None] * len(turn.prompt_ids) + list(turn.logprobs), turn_indices=(i,)))
    return packed


def _extends(seq: PackedSequence, turn: Turn) -> bool:
    n = len(seq.input_ids)
    return (len(turn.prompt_ids) >= n and turn.prompt_ids[:n] == seq.input_ids
            and list(turn.visuals[:len(seq.visuals)]) == list(seq.visuals))
