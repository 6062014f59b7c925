"""The engine interface: generate one assistant turn for each of a batch of prompts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, List, Protocol, Sequence, Tuple

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
    """Two ways in: `generate` runs a batch to completion; `submit` + `collect` let a caller
    hand in each request as soon as it is ready and take results as they finish (no barrier:
    vLLM schedules requests as they come; the HF engine batches what is pending)."""

    processor: object
    policy_version: int

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams) -> List[Generation]:
        ...

    def submit(self, key: Hashable, prompt: Prompt, sampling: SamplingParams) -> None:
        ...

    def collect(self, max_batch: int) -> List[Tuple[Hashable, Generation]]:
        """Block until at least one submitted request has finished; return every finished one."""
        ...
