"""GRPO math (DESIGN.md §8), pure torch: group-relative advantages, the clipped policy loss with
a KL term to the reference, loss aggregation over action tokens only.

Shapes: per-token tensors are [batch, seq] with `mask` (1 on action tokens, 0 elsewhere);
every reduction goes through the mask, so prompt, tool-result and image tokens never count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch


def group_advantages(rewards: Sequence[float], group_ids: Sequence[object],
                     scale_by_std: bool = True, eps: float = 1e-6) -> List[float]:
    """A_i = (r_i - mean(r_group)) / (std(r_group) + eps); std scaling can be switched off.
    The std is the population std of the group (G samples of one pair); a group whose rewards
    are all equal gets 0."""
    groups: Dict[object, List[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    advantages = [0.0] * len(rewards)
    for members in groups.values():
        r = torch.tensor([float(rewards[i]) for i in members], dtype=torch.float64)
        centred = r - r.mean()
        if scale_by_std and bool((centred != 0).any()):
            centred = centred / (r.std(unbiased=False) + eps)
        for i, a in zip(members, centred.tolist()):
            advantages[i] = a
    return advantages


def zero_variance_groups(rewards: Sequence[float], group_ids: Sequence[object]) -> set:
    """Groups whose rewards are all equal: they carry no signal (optionally dropped)."""
    by_group: Dict[object, set] = {}
    for r, g in zip(rewards, group_ids):
        by_group.setdefault(g, set()).add(float(r))
    return {g for g, values in by_group.items() if len(values) == 1}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log p - log q; k2 = (log p - log q)^2 / 2; k3 = exp(log q - log p) - (log q - log p) - 1
    (Schulman's unbiased, non-negative estimator)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}: expected k1, k2 or k3")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """token-mean: mean over every action token of the batch; seq-mean-token-mean: mean over
    sequences of each sequence's token mean (sequences without action tokens are skipped)."""
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        return (values * mask).sum() / mask.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        present = (mask.sum(-1) > 0).to(values.dtype)
        return (per_seq * present).sum() / present.sum().clamp(min=1)
    raise ValueError(f"unknown loss aggregation {mode!r}: expected token-mean or seq-mean-token-mean")


@dataclass
class PolicyLoss:
    loss: torch.Tensor
    pg_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, ref_logprobs: torch.Tensor | None = None,
                clip_low: float = 0.2, clip_high: float = 0.28, beta: float = 0.0,
                kl_estimator: str = "k3", loss_agg: str = "token-mean") -> PolicyLoss:
    """The clipped surrogate with asymmetric clipping plus beta * KL, over action tokens.

    `logprobs` are the learner's (with grad), `old_logprobs` the sampling engine's, both
    [batch, seq]; `advantages` is [batch] (one per sequence: every turn of an episode carries
    its episode's advantage) or [batch, seq]."""
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    was_clipped = ((ratio * advantages) > (clipped * advantages)).to(logprobs.dtype)
    loss = aggregate(per_token, mask, loss_agg)
    kl_value = torch.zeros((), dtype=logprobs.dtype)
    if ref_logprobs is not None and beta > 0:
        kl_value = aggregate(kl_penalty(logprobs, ref_logprobs, kl_estimator), mask, loss_agg)
        loss = loss + beta * kl_value
    with torch.no_grad():
        m = mask.to(logprobs.dtype)
        n = m.sum().clamp(min=1)
        return PolicyLoss(loss=loss, pg_loss=float(aggregate(per_token, mask, loss_agg)),
                          kl=float(kl_value), clip_fraction=float((was_clipped * m).sum() / n),
                          ratio_mean=float((ratio * m).sum() / n))
