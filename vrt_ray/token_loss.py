"""Held-out loss per kind of assistant token: which parts of a trace a policy has learned.

A mean loss hides what is learned. In a teacher trace the markup of a tool call is easy and the
numbers (positions, distances) are hard; a policy that has the markup but not the numbers
writes well-formed calls, one that has neither writes nothing usable. Classes, from a token's
text: `markup` (the tokenizer's added and special tokens: `<|im_end|>`, `<tool_call>`, and
the tiny model's `<think>` / `<answer>`), `number` (digits, no letters), `word` (letters) and
`other` (punctuation, spaces, partial bytes). `loss_by_label` averages by labels given per
position instead: the facts a warm-up caption states (vrt_ray/warmup.py), or the turn of a
trace a token belongs to (`turn_labels`).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

CLASSES = ("markup", "number", "word", "other")


class TokenClasses:
    """Token id -> class, memoised per id."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.markup = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
        self._memo: Dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        cls = self._memo.get(token_id)
        if cls is None:
            cls = "markup" if token_id in self.markup else _text_class(
                self.tokenizer.decode([token_id]))
            self._memo[token_id] = cls
        return cls


def _text_class(text: str) -> str:
    if any(c.isalpha() for c in text):
        return "word"
    if any(c.isdigit() for c in text):
        return "number"
    return "other"


def _mean_loss(items: Sequence, logprobs: Sequence[Optional[Sequence[float]]],
               keys: Callable[[int, int, int], Iterable[str]]) -> Dict[str, List[float]]:
    """[sum of -log p, count] per key over the action tokens of `items`; `keys(item index,
    position, token id)` names the keys a token counts under."""
    total: Dict[str, List[float]] = {}
    for i, (item, values) in enumerate(zip(items, logprobs)):
        if values is None:
            continue
        ids = item.seq.input_ids
        for p, (action, lp) in enumerate(zip(item.seq.action_mask, values)):
            if action and p > 0:
                for key in keys(i, p, ids[p]):
                    row = total.setdefault(key, [0.0, 0])
                    row[0] -= lp
                    row[1] += 1
    return total


def loss_by_class(items: Sequence, logprobs: Sequence[Optional[Sequence[float]]],
                  classes: TokenClasses) -> Dict[str, float]:
    """Mean negative log-likelihood per action token of `items` (objects with `.seq`, a
    PackedSequence): `all`, then each class that has tokens. `logprobs[i][p]` is
    log p(ids[p] | ids[:p]) of item i; the first position has no prediction and is skipped."""
    total = _mean_loss(items, logprobs, lambda i, p, token: ("all", classes(token)))
    order = ("all",) + CLASSES
    return {k: total[k][0] / total[k][1] for k in order if k in total}


def loss_by_label(items: Sequence, logprobs: Sequence[Optional[Sequence[float]]],
                  labels: Sequence[Mapping[int, str]]) -> Dict[str, float]:
    """Mean negative log-likelihood per label, over the action tokens that `labels[i]` (position
    -> label) names in item i; labels in order of first appearance."""
    total = _mean_loss(items, logprobs,
                       lambda i, p, token: (labels[i][p],) if p in labels[i] else ())
    return {k: v[0] / v[1] for k, v in total.items()}


def turn_positions(seq) -> Dict[int, List[int]]:
    """0-based turn of the trajectory (`seq.turn_indices`) -> the positions of its action
    tokens. A packed sequence holds one run of action tokens per turn."""
    runs = [p for p, action in enumerate(seq.action_mask)
            if action and (p == 0 or not seq.action_mask[p - 1])]
    if len(runs) != len(seq.turn_indices):
        raise ValueError(f"{len(runs)} runs of action tokens for turns {seq.turn_indices}")
    positions: Dict[int, List[int]] = {}
    for start, turn in zip(runs, seq.turn_indices):
        end = start
        while end < len(seq.action_mask) and seq.action_mask[end]:
            end += 1
        positions[turn] = list(range(start, end))
    return positions


def turn_labels(seq, answer_turn: Optional[int] = None) -> Dict[int, str]:
    """Position -> the turn its action token belongs to, for `loss_by_label`: `turn_N` with N
    the 1-based turn of the trajectory (`seq.turn_indices`), `answer` for turn `answer_turn`
    (0-based)."""
    return {p: "answer" if turn == answer_turn else f"turn_{turn + 1}"
            for turn, positions in turn_positions(seq).items() for p in positions}
