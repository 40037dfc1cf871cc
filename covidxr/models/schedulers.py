"""Learning-rate schedules composed from torch's own schedulers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(
    optimizer: Optimizer, total_epochs: int, warmup_epochs: int = 1, min_factor: float = 0.01
) -> LRScheduler:
    """Linear warm-up from ``1/(warmup+1)`` of the rate, then cosine decay, stepped per epoch.

    torch's ``LinearLR`` then ``CosineAnnealingLR``; the floor is ``min_factor`` times the first
    (head) group's rate, since ``CosineAnnealingLR`` takes one floor for every group.
    """
    if total_epochs < 1 or warmup_epochs < 0:
        raise ValueError(
            f"total_epochs >= 1 and warmup_epochs >= 0, got {total_epochs}, {warmup_epochs}"
        )
    floor = min_factor * optimizer.param_groups[0]["lr"]
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_epochs - warmup_epochs), eta_min=floor)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, 1 / (warmup_epochs + 1), 1.0, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])


def optimizer_config(optimizer: Optimizer, scheduler: Mapping[str, Any] | None) -> dict[str, Any]:
    """What ``configure_optimizers`` returns for ``optimizer`` and a ``scheduler`` config group
    entry (``scheduler``: a partial taking the optimizer; ``interval``, ``frequency``,
    ``monitor``)."""
    if not scheduler or scheduler.get("scheduler") is None:
        return {"optimizer": optimizer}
    config = {
        "scheduler": scheduler["scheduler"](optimizer=optimizer),
        "interval": scheduler.get("interval", "epoch"),
        "frequency": scheduler.get("frequency", 1),
    }
    if scheduler.get("monitor"):
        config["monitor"] = scheduler["monitor"]
    return {"optimizer": optimizer, "lr_scheduler": config}
