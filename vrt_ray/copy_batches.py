"""Copying sequences (vrt_ray.copy_corpus) as model inputs: tokenized batches with labels and
a mask of the copied tokens, the held-out measure (loss and greedy agreement per kind), and
learner items (`CopySource`: the text-only kinds and `frame_images`) for the warm-up's copying
phase and for steps that mix them in."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from vrt_ray.copy_corpus import FRAME_IMAGES, GENERATORS, CopySequence
from vrt_ray.copy_images import FrameImageCopies
from vrt_ray.errors import VrtError
from vrt_ray.learner_core import TrainSequence
from vrt_ray.model_inputs import PixelBudget
from vrt_ray.preset import Preset
from vrt_ray.sft import IGNORE
from vrt_ray.trajectory import PackedSequence


def draw(rng: np.random.Generator, pieces: Sequence[str], kinds: Sequence[str], n: int,
         preset: Preset) -> List[CopySequence]:
    """`n` sequences in `preset`'s wording, kinds taken in turn from `kinds`."""
    return [GENERATORS[kinds[i % len(kinds)]](rng, pieces, preset) for i in range(n)]


def _overlaps(start: int, end: int, spans) -> bool:
    return any(start < b and end > a for a, b in spans)


def _tokens(tokenizer, seq: CopySequence) -> Tuple[List[int], List[bool], List[bool]]:
    """The sequence's token ids, which of them lie in the labelled tail, and which are copied."""
    row = tokenizer(seq.text, return_offsets_mapping=True, add_special_tokens=False)
    tail = [a >= seq.start for a, _ in row["offset_mapping"]]
    copied = [t and _overlaps(a, b, seq.copied) for t, (a, b) in zip(tail, row["offset_mapping"])]
    return list(row["input_ids"]), tail, copied


def encode(tokenizer, sequences: Sequence[CopySequence],
           copied_only: bool = False) -> Dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels (right-padded; labels on the tokens from the
    sequence's `start` on, or with `copied_only` on the copied tokens alone), and `copied`:
    True where a token from `start` on overlaps a copied span."""
    rows = [_tokens(tokenizer, s) for s in sequences]
    width = max(len(r[0]) for r in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    copied = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, (row_ids, tail, row_copied) in enumerate(rows):
        n = len(row_ids)
        ids[r, :n] = torch.tensor(row_ids)
        mask[r, :n] = 1
        copied[r, :n] = torch.tensor(row_copied)
        keep = copied[r, :n] if copied_only else torch.tensor(tail)
        labels[r, :n] = torch.where(keep, ids[r, :n], IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "copied": copied}


@torch.no_grad()
def copy_measure(model, tokenizer, sequences: Sequence[CopySequence],
                 batch_size: int = 16) -> Dict[str, Dict[str, float]]:
    """Per kind: mean loss (nats) and greedy agreement on the copied tokens."""
    sums: Dict[str, List[float]] = {}
    was_training = model.training
    model.eval()
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i:i + batch_size]
        enc = encode(tokenizer, chunk)
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        target, where = enc["labels"][:, 1:], enc["copied"][:, 1:]
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        right = logp.argmax(-1) == target
        for r, seq in enumerate(chunk):
            s = sums.setdefault(seq.kind, [0.0, 0.0, 0])
            s[0] -= picked[r][where[r]].sum().item()
            s[1] += right[r][where[r]].sum().item()
            s[2] += int(where[r].sum())
    model.train(was_training)
    return {kind: {"loss": round(s[0] / s[2], 3), "agreement": round(s[1] / s[2], 3)}
            for kind, s in sorted(sums.items())}


def train_sequences(tokenizer, sequences: Sequence[CopySequence],
                    budget: PixelBudget) -> List[TrainSequence]:
    """Each sequence as a text-only learner item, its action mask (so its labels) on the copied
    tokens alone: the other labelled tokens are random notes or format the copy does not need."""
    items = []
    for seq in sequences:
        ids, _, copied = _tokens(tokenizer, seq)
        packed = PackedSequence(ids, [], copied, [None] * len(ids), (0,))
        items.append(TrainSequence(packed, {}, budget))
    return items


def with_share(items: Sequence[TrainSequence], extra: Sequence[TrainSequence],
               share: float) -> List[TrainSequence]:
    """`items` then `extra`, the extra sequences weighted (`loss_weight`) to carry `share` of the
    step's SFT loss; at share 0 every action token counts once."""
    ours = sum(sum(it.seq.action_mask) for it in extra)
    theirs = sum(sum(it.seq.action_mask) * it.loss_weight for it in items)
    if not share or not ours or not theirs:
        return [*items, *extra]
    weight = share * theirs / ((1 - share) * ours)
    return [*items, *(replace(it, loss_weight=weight) for it in extra)]


@dataclass
class CopySource:
    """Where a run's copying sequences come from: the text-only kinds from random `pieces`
    (`random_pieces`) in `preset`'s wording, `frame_images` from `images` (None: not drawn)."""

    tokenizer: object
    pieces: Sequence[str]
    preset: Preset
    budget: PixelBudget
    images: Optional[FrameImageCopies] = None

    def items(self, kinds: Sequence[str], n: int,
              rng: np.random.Generator) -> Tuple[List[TrainSequence], List[str]]:
        """`n` learner items, kinds taken in turn from `kinds`, labelled on the copied tokens
        alone; and each item's kind."""
        items, drawn = [], [kinds[i % len(kinds)] for i in range(n)]
        for kind in drawn:
            if kind == FRAME_IMAGES:
                if self.images is None:
                    raise VrtError(f"copy kind {FRAME_IMAGES!r}: this run draws no frames")
                items.append(self.images.sequence(rng))
            else:
                items += train_sequences(self.tokenizer,
                                         [GENERATORS[kind](rng, self.pieces, self.preset)],
                                         self.budget)
        return items, drawn


def copying_mixer(source: CopySource, kinds: Sequence[str], per_step: int, share: float,
                  rng: np.random.Generator
                  ) -> Callable[[List[TrainSequence]], List[TrainSequence]]:
    """A step's sequences -> the same plus `per_step` fresh copying sequences of `kinds`,
    carrying `share` of the step's loss (`with_share`); unchanged at `per_step` 0."""
    if not per_step:
        return list
    return lambda items: with_share(items, source.items(kinds, per_step, rng)[0], share)


def held_out_copying(source: CopySource, kinds: Sequence[str], n: int,
                     rng: np.random.Generator
                     ) -> Tuple[List[TrainSequence], List[Dict[int, str]]]:
    """`n` copying sequences as learner items, and per item its copied positions labelled
    `copy_<kind>` (for `loss_by_label`): how much of the copy a stage keeps."""
    items, drawn = source.items(kinds, n, rng)
    return items, [{p: f"copy_{kind}" for p, a in enumerate(item.seq.action_mask) if a}
                   for item, kind in zip(items, drawn)]
