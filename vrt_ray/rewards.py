"""The verifier (DESIGN.md §7): format, per-dimension and overall correctness, the reward.

Pure functions over what an episode produced (its parsed verdicts and tool-call counts) and the
pair's labels; the Ray verifier actor is a thin wrapper around `score`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Dict, Mapping, Optional, Sequence

OVERALL = "overall"


@dataclass(frozen=True)
class RewardWeights:
    w_format: float = 0.2
    w_dims: float = 0.4
    w_overall: float = 0.4
    invalid_call_penalty: float = 0.0
    over_budget_penalty: float = 0.0
    incomplete_answer_penalty: float = 0.0

    @classmethod
    def from_config(cls, verifier_cfg) -> "RewardWeights":
        return cls(**{k: float(verifier_cfg[k]) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Score:
    reward: float
    format: float  # 1 when the answer parsed complete and every tool call was well formed
    dimension_accuracy: float  # fraction of labelled dimensions (not overall) judged right
    overall: float  # 1 when the overall verdict matches the overall label
    all_correct: bool  # format, every labelled dimension and overall right: the RFT filter
    correct: Mapping[str, bool]  # per labelled dimension (overall included)

    def to_dict(self) -> dict:
        return asdict(self)


def score(verdicts: Optional[Mapping[str, str]], labels: Mapping[str, str],
          dimensions: Sequence[str], weights: RewardWeights = RewardWeights(),
          invalid_calls: int = 0, turns_over_budget: int = 0,
          incomplete_answer: bool = False) -> Score:
    """Score one episode.

    `verdicts` maps dimension -> `A`/`B`/`tie` as parsed from the final answer (None: no
    answer); `dimensions` are the ones the protocol asks for (overall is always asked for).
    Only labelled dimensions count; a tie label is matched only by a `tie` verdict. With no
    labelled dimension besides overall, dimension accuracy follows the overall verdict.
    `incomplete_answer`: the episode ended on an answer that did not parse complete. It costs
    `incomplete_answer_penalty`: without it, a policy that cannot yet answer learns to end
    its episodes early on a broken answer, the cheapest way past the per-call penalty.
    """
    verdicts = dict(verdicts or {})
    required = list(dimensions) + [OVERALL]
    complete = bool(verdicts) and all(verdicts.get(d) in ("A", "B", "tie") for d in required)
    fmt = 1.0 if complete and invalid_calls == 0 else 0.0
    correct = {d: verdicts.get(d) == labels[d] for d in required if d in labels}
    dims = [d for d in dimensions if d in labels]
    overall = float(correct.get(OVERALL, False))
    dim_acc = sum(correct[d] for d in dims) / len(dims) if dims else overall
    reward = (weights.w_format * fmt + weights.w_dims * dim_acc + weights.w_overall * overall
              - weights.invalid_call_penalty * invalid_calls
              - weights.over_budget_penalty * turns_over_budget
              - weights.incomplete_answer_penalty * incomplete_answer)
    all_correct = bool(fmt) and bool(correct) and all(correct.values())
    return Score(reward=reward, format=fmt, dimension_accuracy=dim_acc, overall=overall,
                 all_correct=all_correct, correct=correct)


def score_rates(scores: Sequence[Mapping], dimensions: Sequence[str]) -> Dict[str, float]:
    """Over score dicts (`Score.to_dict`): the share with the format right, all right, and
    right on each labelled dimension and overall (a dimension no sample is labelled on is left
    out)."""
    rates = {"format": fmean(s["format"] for s in scores) if scores else 0.0,
             "all_correct": fmean(float(s["all_correct"]) for s in scores) if scores else 0.0}
    for dim in (*dimensions, OVERALL):
        judged = [s["correct"][dim] for s in scores if dim in s["correct"]]
        if judged:
            rates[dim] = fmean(float(c) for c in judged)
    return rates
