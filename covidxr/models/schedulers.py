"""Learning-rate schedules that torch does not ship as one object."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_epochs: int, warmup_epochs: int = 1, min_factor: float = 0.01
) -> LambdaLR:
    """Linear warm-up from ``1/(warmup+1)`` of the rate, then cosine decay to ``min_factor``.

    Stepped once per epoch; every parameter group keeps its own base rate.
    """
    if total_epochs < 1 or warmup_epochs < 0:
        raise ValueError(
            f"total_epochs >= 1 and warmup_epochs >= 0, got {total_epochs}, {warmup_epochs}"
        )

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        span = max(1, total_epochs - warmup_epochs)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
