"""`ReferencePolicy`: a Ray actor holding the frozen reference model; it scores the action tokens
of every turn (or packed sequence) under that turn's own context, images rebuilt from frame
references, with the same processor settings as the rollout engines."""
from __future__ import annotations

from typing import List, Sequence

import ray


@ray.remote
class ReferencePolicy:
    def __init__(self, model_dir: str, min_pixels: int, max_pixels: int, dtype: str = "float32",
                 attn_implementation: str = "sdpa"):
        from vrt_ray.models import load_policy, load_processor

        self.processor = load_processor(model_dir, min_pixels, max_pixels)
        self.model = load_policy(model_dir, dtype, attn_implementation)
        self.model.requires_grad_(False)

    def logprobs(self, items: Sequence, temperature: float = 1.0) -> List[List[float]]:
        """Per-token log-probs of each TrainSequence on its action tokens (position p:
        log p(ids[p] | ids[:p]); 0 elsewhere)."""
        import torch

        from vrt_ray.frame_cache import default_cache
        from vrt_ray.learner_core import sequence_logprobs

        with torch.no_grad():
            return [sequence_logprobs(self.model, self.processor, it, temperature,
                                      cache=default_cache(), action_only=True).tolist()
                    for it in items]
