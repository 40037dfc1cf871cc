"""Every random draw of the data pipeline as a function of (seed, epoch, position).

The training sampler orders (or draws, with class weights) an epoch from a generator seeded by
``(seed, epoch)`` and hands each position its own augmentation seed, so a run's data stream does
not depend on how many worker processes decode it, and a resumed epoch replays exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def seed_pipeline(transform: A.Compose, seed: int) -> None:
    """Seed an albumentations pipeline, each transform from its own derived seed (one shared
    seed would tie, say, a flip's coin to a brightness change's)."""
    transform.set_random_seed(seed)
    for position, child in enumerate(transform.transforms):
        child.set_random_seed(derive_seed(seed, position))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` for one epoch; ``set_epoch`` (called by Lightning
    at each epoch start) selects the epoch.

    ``weights=None``: a permutation of the dataset. With ``weights``: ``len(weights)`` draws with
    replacement, proportional to them (a class-balancing sampler).
    """

    def __init__(self, size: int, seed: int, weights: Sequence[float] | None = None) -> None:
        self.size, self.seed, self.epoch = size, int(seed), 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        #: ``(epoch, positions)``: positions of that epoch already trained before a preemption
        self.resume_from: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, True, generator=generator)
        start = 0
        if self.resume_from is not None and self.resume_from[0] == self.epoch:
            start = self.resume_from[1]  # a job preempted mid-epoch continues where it stopped
        for position, index in enumerate(order.tolist()):
            if position >= start:
                yield index, derive_seed(self.seed, self.epoch, position)
