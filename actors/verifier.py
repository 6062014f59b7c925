"""`RewardVerifier`: a Ray actor scoring trajectories with vrt_ray/rewards.py."""
from __future__ import annotations

from typing import List, Mapping, Sequence

import ray


@ray.remote
class RewardVerifier:
    def __init__(self, verifier_cfg: dict, dimensions: Sequence[str]):
        from vrt_ray.rewards import RewardWeights

        self.weights = RewardWeights.from_config(verifier_cfg)
        self.dimensions = list(dimensions)

    def score(self, trajectories: Sequence[dict], labels: Mapping[str, Mapping[str, str]]) -> List[dict]:
        """One score dict per trajectory dict; `labels` are keyed by pair id."""
        from vrt_ray.rewards import score

        return [score(t["verdicts"] or None, labels[t["pair_id"]], self.dimensions, self.weights,
                      invalid_calls=t["invalid_calls"],
                      turns_over_budget=t["turns_over_budget"],
                      incomplete_answer=t["end_reason"] == "answer" and not t["answer_complete"]
                      ).to_dict()
                for t in trajectories]
