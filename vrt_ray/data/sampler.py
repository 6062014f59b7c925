"""Which training pairs a step takes: a fresh permutation per epoch (seeded by the run seed and
the epoch), read from a data position that counts the pairs taken so far. A resumed run with the
same position takes the same batches."""
from __future__ import annotations

from typing import List

import numpy as np


class PairSampler:
    def __init__(self, num_pairs: int, seed: int):
        if num_pairs < 1:
            raise ValueError("no training pairs to sample from")
        self.num_pairs, self.seed = num_pairs, seed
        self._epoch, self._order = -1, np.arange(0)

    def batch(self, position: int, size: int) -> List[int]:
        """Pair indices at data positions [position, position + size), across epochs."""
        return [self._at(p) for p in range(position, position + size)]

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_pairs)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.num_pairs)
        return int(self._order[offset])
