"""The one record of a stage's predictions: dataset index, target and class probabilities.

Every per-image number (bootstrap intervals, calibration, the reliability diagram, the W&B
table, prediction CSVs, paired tests between runs) reads this record. It is gathered across
processes once, at the end of the stage, and sorted by dataset index, so row ``i`` is image ``i``
of the split under any strategy (one process, or DDP with uneven or padded shards).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


@dataclass  # not frozen: torchmetrics rebuilds what compute() returns
class Predictions:
    """Rows sorted by dataset index: ``indices [n]``, ``targets [n]``, ``probs [n, C]``."""

    indices: np.ndarray
    targets: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


class PredictionStore(Metric):
    """Collects ``(index, target, probs)`` per batch; ``compute`` gathers and sorts them."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("probs", default=[], dist_reduce_fx="cat")

    def update(self, indices: torch.Tensor, targets: torch.Tensor, probs: torch.Tensor) -> None:
        self.indices.append(indices.detach().long())
        self.targets.append(targets.detach().long())
        self.probs.append(probs.detach().float())

    def compute(self) -> Predictions:
        indices = dim_zero_cat(self.indices).cpu().numpy()
        # A sampler that pads shards repeats images: each dataset index counts once.
        indices, first = np.unique(indices, return_index=True)
        return Predictions(
            indices=indices,
            targets=dim_zero_cat(self.targets).cpu().numpy()[first],
            probs=dim_zero_cat(self.probs).cpu().double().numpy()[first],
        )
