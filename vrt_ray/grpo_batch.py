"""From a step's scored trajectories to the learner's batch and the step's rollout metrics
(DESIGN.md §3 step 6, §8): group-relative advantages per pair, zero-variance groups dropped when
configured, every turn (or packed sequence) of a kept episode carrying its episode's advantage.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean, pstdev
from typing import Dict, List, Mapping, Sequence

from vrt_ray.grpo import group_advantages, zero_variance_groups
from vrt_ray.learner_core import TrainSequence, train_sequences
from vrt_ray.rewards import score_rates
from vrt_ray.trajectory import Trajectory


@dataclass
class GRPOBatch:
    items: List[TrainSequence]
    advantages: List[float]  # per item: its episode's advantage
    episode_advantages: List[float]  # per trajectory, in input order (0 for dropped groups)
    kept_groups: int
    groups: int


def build_batch(trajectories: Sequence[Trajectory], rewards: Sequence[float], scale_by_std: bool,
                eps: float, drop_zero_variance: bool, pack: bool = True) -> GRPOBatch:
    group_ids = [t.pair_id for t in trajectories]
    advantages = group_advantages(rewards, group_ids, scale_by_std, eps)
    dropped = zero_variance_groups(rewards, group_ids) if drop_zero_variance else set()
    items: List[TrainSequence] = []
    item_advantages: List[float] = []
    for trajectory, advantage in zip(trajectories, advantages):
        if trajectory.pair_id in dropped:
            continue
        sequences = train_sequences(trajectory, pack=pack)
        items += sequences
        item_advantages += [advantage] * len(sequences)
    groups = len(set(group_ids))
    return GRPOBatch(items, item_advantages,
                     [0.0 if t.pair_id in dropped else a for t, a in zip(trajectories, advantages)],
                     kept_groups=groups - len(dropped), groups=groups)


def rollout_metrics(trajectories: Sequence[Trajectory], scores: Sequence[Mapping],
                    dimensions: Sequence[str]) -> Dict[str, float]:
    """The per-step rollout metrics of DESIGN.md §8 (learner metrics come from the learner)."""
    rewards = [s["reward"] for s in scores]
    rates = score_rates(scores, dimensions)
    calls = [t.valid_calls + t.invalid_calls for t in trajectories]
    out = {"reward_mean": fmean(rewards), "reward_std": pstdev(rewards),
           "format_rate": rates.pop("format"), "all_correct_rate": rates.pop("all_correct"),
           "tool_calls_per_episode": fmean(calls),
           "invalid_call_rate": sum(t.invalid_calls for t in trajectories) / max(sum(calls), 1),
           "response_tokens": fmean(sum(len(turn.token_ids) for turn in t.turns)
                                    for t in trajectories),
           "turns_per_episode": fmean(len(t.turns) for t in trajectories),
           "answered_rate": fmean(float(t.answer_complete) for t in trajectories)}
    out.update({f"accuracy_{dim}": rate for dim, rate in rates.items()})
    return out
