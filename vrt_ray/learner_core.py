"""What one learner rank computes, in pure torch + transformers (no Ray, no DeepSpeed):
token-budget micro-batches, per-token log-probs on rebuilt inputs, the GRPO and SFT losses.

A `TrainSequence` is one packed sequence with what rebuilds its pixels (video paths and the
pixel budget of its trajectory); frames come through the process's frame cache, so the pixels
are those the engine saw and the log-probs match the engine's (tests/test_episodes.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from vrt_ray.frame_cache import FrameCache
from vrt_ray.grpo import PolicyLoss, policy_loss
from vrt_ray.model_inputs import FrameSource, PixelBudget, rebuild_inputs
from vrt_ray.sft import IGNORE as IGNORE_INDEX, labels
from vrt_ray.trajectory import PackedSequence, Trajectory, to_sequences



@dataclass
class TrainSequence:
    seq: PackedSequence
    videos: Dict[str, str]
    budget: PixelBudget
    loss_weight: float = 1.0  # SFT: each action token counts this many times in the step's mean

    def __len__(self) -> int:
        return len(self.seq.input_ids)

    def source(self, cache: Optional[FrameCache] = None) -> FrameSource:
        return FrameSource(self.videos, self.budget, cache)


def train_sequences(trajectory: Trajectory, pack: bool = True) -> List[TrainSequence]:
    """The trajectory's turns as training sequences (packed where DESIGN.md §3 allows)."""
    budget = PixelBudget(**trajectory.budget)
    return [TrainSequence(s, dict(trajectory.videos), budget)
            for s in to_sequences(trajectory.turns, pack=pack)]


def preload_frames(items: Sequence[TrainSequence], cache: FrameCache) -> int:
    """Decode every frame the items show into `cache`, one sorted pass per video, and return
    how many were decoded. Steps that then draw items at random hit the cache instead of each
    seeking into a video for one frame (the warm-up: 16 captioned frames a video); frames
    beyond the cache's bound are evicted again, so it pays only when they fit."""
    wanted: Dict[Tuple[str, PixelBudget], Dict[int, None]] = {}
    for item in items:
        for _, refs in item.seq.visuals:
            for ref in refs:
                wanted.setdefault((item.videos[ref.video], item.budget), {})[ref.index] = None
    before = cache.decoded_frames
    for (path, budget), indices in wanted.items():
        cache.get(path, list(indices), budget.min_pixels, budget.max_pixels, budget.backend)
    return cache.decoded_frames - before


def micro_batches(sequences: Sequence, max_tokens: int) -> List[List[int]]:
    """Indices of `sequences` grouped in order so each group's total length stays within
    `max_tokens`; a sequence longer than the budget forms a group of its own."""
    groups: List[List[int]] = []
    used = 0
    for i, s in enumerate(sequences):
        n = len(s)
        if groups and used + n <= max_tokens:
            groups[-1].append(i)
            used += n
        else:
            groups.append([i])
            used = n
    return groups


def shard_plan(lengths: Sequence[int], world_size: int, max_tokens: int,
               same_shape: bool = False) -> List[List[List[Tuple[int, float]]]]:
    """Per rank, its micro-batches as (sequence index, weight) lists.

    Sequences are dealt round-robin, so ranks get equal shares; a rank short of a sequence gets
    a zero-weight copy, and a rank with fewer micro-batches than the busiest one gets zero-weight
    copies as extra micro-batches, so every rank runs the same number of backward passes and
    the ZeRO-2 gradient reductions line up. With `same_shape` (ZeRO-3, whose every forward
    gathers parameters), micro-batch j also holds as many sequences on every rank."""
    if not lengths:
        raise ValueError("an empty batch cannot be sharded")
    per_rank = -(-len(lengths) // world_size)
    ranks = []
    for r in range(world_size):
        own = list(range(r, len(lengths), world_size))
        items = [(i, 1.0) for i in own] + [(r % len(lengths), 0.0)] * (per_rank - len(own))
        ranks.append(items)
    plans = [[[items[j] for j in group]
              for group in micro_batches([range(lengths[i]) for i, _ in items], max_tokens)]
             for items in ranks]
    steps = max(len(p) for p in plans)
    shortest = [min(items, key=lambda it: lengths[it[0]])[0] for items in ranks]
    for plan, pad in zip(plans, shortest):
        plan.extend([[(pad, 0.0)] for _ in range(steps - len(plan))])
    if same_shape:
        for j in range(steps):
            size = max(len(plan[j]) for plan in plans)
            for plan, pad in zip(plans, shortest):
                plan[j].extend([(pad, 0.0)] * (size - len(plan[j])))
    return plans


def _token_scores(model, processor, item: TrainSequence, temperature: float,
                  cache: Optional[FrameCache], with_entropy: bool, action_only: bool):
    """Per-position log-probs (and entropies) of one sequence, 0 where not computed. With
    `action_only`, the LM head runs only on the positions that predict action tokens: the other
    positions' logits (most of a multi-turn context) are never made."""
    ids = item.seq.input_ids
    images, videos = item.source(cache).visuals(item.seq.visuals)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in rebuild_inputs(processor, ids, images, videos).items()}
    targets = inputs["input_ids"][0]
    if action_only:
        scored = torch.tensor([p for p, a in enumerate(item.seq.action_mask) if a and p > 0],
                              dtype=torch.long, device=device)
    else:
        scored = torch.arange(1, len(ids), device=device)
    out = torch.zeros(len(ids), device=device)
    if not images and not videos and hasattr(model, "get_image_features"):
        # embeddings, then the vision tower, then the layers: the order of an image's forward
        embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
        inputs["inputs_embeds"] = embeds + vision_anchor(model)
    entropy = torch.zeros(len(ids), device=device) if with_entropy else None
    # The forward runs even with nothing to score: ranks stay in step (ZeRO-3 gathers) and the
    # result stays on the graph.
    logits = model(**inputs, use_cache=False, logits_to_keep=scored - 1).logits[0].float()
    logp = torch.log_softmax(logits / temperature, -1)
    out = out.index_put((scored,), logp.gather(-1, targets[scored][:, None])[:, 0])
    if with_entropy:
        with torch.no_grad():
            entropy[scored] = -(logp.exp() * logp).sum(-1)
    return out, entropy


def sequence_logprobs(model, processor, item: TrainSequence, temperature: float = 1.0,
                      cache: Optional[FrameCache] = None, action_only: bool = False) -> torch.Tensor:
    """[len(ids)]: position p holds log p(ids[p] | ids[:p]) (0 at p = 0, and with `action_only`
    0 at every position that is not an action token), from one forward pass on the rebuilt
    inputs; differentiable."""
    return _token_scores(model, processor, item, temperature, cache, False, action_only)[0]


def _padded(rows: Sequence[Sequence[float]], length: int) -> torch.Tensor:
    out = torch.zeros(len(rows), length)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def _action_rows(items: Sequence[TrainSequence], values: Sequence[Optional[Sequence]]):
    """Per-token lists with None (non-action or missing) as 0."""
    return [[float(v) if v is not None and a else 0.0
             for v, a in zip(vals if vals is not None else [None] * len(it), it.seq.action_mask)]
            for it, vals in zip(items, values)]


@dataclass
class GRPOTerms:
    result: PolicyLoss
    entropy: float
    action_tokens: int
    sequences: int  # sequences with action tokens and nonzero weight


def grpo_loss_for(model, processor, items: Sequence[TrainSequence], advantages: Sequence[float],
                  ref_logprobs: Optional[Sequence[Optional[Sequence[float]]]] = None,
                  clip_low: float = 0.2, clip_high: float = 0.28, beta: float = 0.0,
                  kl_estimator: str = "k3", loss_agg: str = "token-mean",
                  temperature: float = 1.0, weights: Optional[Sequence[float]] = None,
                  cache: Optional[FrameCache] = None) -> GRPOTerms:
    """The GRPO loss of a micro-batch: the learner's log-probs against the engine's (stored on
    the action positions of each PackedSequence) with every sequence's episode advantage;
    `ref_logprobs` per sequence, aligned with its ids (None where there is none). A sequence of
    weight 0 (a padding copy) is scored but masked out of the loss."""
    length = max(len(it) for it in items)
    scored = [_token_scores(model, processor, it, temperature, cache, True, True)
              for it in items]
    logprobs = torch.stack([torch.nn.functional.pad(lp, (0, length - lp.numel())) for lp, _ in scored])
    entropy = torch.stack([torch.nn.functional.pad(e, (0, length - e.numel())) for _, e in scored])
    weights = [1.0] * len(items) if weights is None else list(weights)
    mask = _padded([[float(a) * w for a in it.seq.action_mask] for it, w in zip(items, weights)],
                   length)
    old = _padded(_action_rows(items, [it.seq.logprobs for it in items]), length)
    ref = None
    if ref_logprobs is not None and beta > 0:
        ref = _padded(_action_rows(items, ref_logprobs), length).to(logprobs.device)
    device = logprobs.device
    mask = mask.to(device)
    result = policy_loss(logprobs, old.to(device), torch.tensor(list(advantages), device=device,
                                                                  dtype=torch.float32),
                         mask, ref, clip_low=clip_low, clip_high=clip_high, beta=beta,
                         kl_estimator=kl_estimator, loss_agg=loss_agg)
    n = int(mask.sum())
    sequences = int((mask.sum(-1) > 0).sum())
    return GRPOTerms(result, float((entropy * mask).sum() / max(n, 1)), n, sequences)


def sft_labels(item: TrainSequence) -> List[int]:
    """Labels of one sequence (vrt_ray.sft.labels: ids on action tokens, IGNORE_INDEX elsewhere)."""
    return labels(item.seq)


def vision_anchor(model) -> torch.Tensor:
    """0 times the vision tower's output on one blank image of the smallest grid. A text-only
    sequence's embeddings add it, so its forward and backward run the same modules in the same
    order as an image sequence's: ranks that hold text-only and image sequences side by side
    then reduce the same parameters' gradients in the same layout (DeepSpeed ZeRO's
    collectives must match across ranks)."""
    vision = model.config.vision_config
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    temporal = vision.temporal_patch_size if isinstance(vision.temporal_patch_size, int) \
        else vision.temporal_patch_size[0]
    merge = vision.spatial_merge_size
    param = next(model.parameters())
    pixels = torch.zeros(merge * merge, vision.in_channels * temporal * patch * patch,
                         dtype=param.dtype, device=param.device)
    grid = torch.tensor([[1, merge, merge]], device=param.device)
    features = model.get_image_features(pixels, grid)
    return 0.0 * sum(f.sum() for f in getattr(features, "pooler_output", features))


def sft_loss_for(model, processor, items: Sequence[TrainSequence],
                 weights: Optional[Sequence[float]] = None,
                 cache: Optional[FrameCache] = None) -> Tuple[torch.Tensor, float]:
    """Cross-entropy on action tokens only, mean over the micro-batch's action tokens, each
    counted `loss_weight` times; returns (loss, weighted number of action tokens). A sequence of
    weight 0 is scored but adds nothing."""
    total, count = None, 0.0
    weights = [1.0] * len(items) if weights is None else list(weights)
    for it, w in zip(items, weights):
        logprobs = sequence_logprobs(model, processor, it, cache=cache, action_only=True)
        mask = torch.tensor([l != IGNORE_INDEX for l in sft_labels(it)], device=logprobs.device)
        mask[0] = False  # nothing predicts the first token
        mask = mask & (w != 0)
        nll = -(logprobs * mask).sum() * it.loss_weight
        total = nll if total is None else total + nll
        count += int(mask.sum()) * it.loss_weight
    return total / (count or 1.0), count  # a weighted count may lie below 1

@dataclass
class Shard:
    """One rank's part of a step: its sequences, its micro-batches as (index into `items`,
    weight) lists, per-sequence advantages and reference log-probs, and the step's totals over
    all ranks, which scale each micro-batch's loss so the ranks' averaged gradients equal the
    gradient of the whole batch's loss."""

    items: List[TrainSequence]
    indices: List[int]  # each item's index in the batch
    micro_batches: List[List[Tuple[int, float]]]
    advantages: List[float]
    ref_logprobs: Optional[List[Optional[List[float]]]]
    total_action_tokens: float  # SFT: weighted by the items' loss_weight
    total_sequences: int
    world_size: int


def make_shards(items: Sequence[TrainSequence], world_size: int, max_tokens: int,
                advantages: Optional[Sequence[float]] = None,
                ref_logprobs: Optional[Sequence[Optional[Sequence[float]]]] = None,
                same_shape: bool = False) -> List[Shard]:
    """The batch cut into `world_size` shards by `shard_plan`."""
    plans = shard_plan([len(it) for it in items], world_size, max_tokens, same_shape)
    advantages = [0.0] * len(items) if advantages is None else list(advantages)
    total_tokens = sum(sum(it.seq.action_mask) * it.loss_weight for it in items)
    total_sequences = sum(1 for it in items if any(it.seq.action_mask))
    shards = []
    for plan in plans:
        used = list(dict.fromkeys(i for group in plan for i, _ in group))
        local = {i: j for j, i in enumerate(used)}
        shards.append(Shard(
            items=[items[i] for i in used], indices=used,
            micro_batches=[[(local[i], w) for i, w in group] for group in plan],
            advantages=[advantages[i] for i in used],
            ref_logprobs=None if ref_logprobs is None else [ref_logprobs[i] for i in used],
            total_action_tokens=total_tokens, total_sequences=total_sequences,
            world_size=world_size))
    return shards
