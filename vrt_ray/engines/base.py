"""The engine interface: generate one assistant turn for each of a batch of prompts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Prompt:
    """One turn's prompt: the rendered chat text and its visuals, in text order."""

    text: str
    images: Sequence[np.ndarray] = ()
    videos: Sequence[Sequence[np.ndarray]] = ()


@dataclass
class Generation:
    prompt_ids: List[int]  # the exact context the engine saw
    token_ids: List[int]  # generated, including the stop token when one was hit
    logprobs: List[float]  # the engine's log-probs of `token_ids` (at the sampling temperature)
    finish_reason: str  # stop | length


class Engine(Protocol):
    processor: object
    policy_version: int

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> List[Generation]:
        ...
