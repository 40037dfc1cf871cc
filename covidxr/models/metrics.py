"""The numbers a clinician-facing table needs, as torchmetrics collections.

Two classes: binary metrics with one class (COVID by default) as the positive one, so
sensitivity and specificity mean what a clinician expects. Three or four classes: overall accuracy,
macro averages, and sensitivity/precision/specificity/F1 per class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

METRIC_NAMES = ("acc", "precision", "sensitivity", "specificity", "f1", "auroc")


def build_metrics(class_names: Sequence[str]) -> MetricCollection:
    """Metrics over ``(preds, target)`` as ``metric_inputs`` prepares them."""
    n = len(class_names)
    if n == 2:
        return MetricCollection(
            {
                "acc": BinaryAccuracy(),
                "precision": BinaryPrecision(),
                "sensitivity": BinaryRecall(),
                "specificity": BinarySpecificity(),
                "f1": BinaryF1Score(),
                "auroc": BinaryAUROC(),
            }
        )
    labels = list(class_names)
    per_class = {
        "precision": MulticlassPrecision,
        "sensitivity": MulticlassRecall,
        "specificity": MulticlassSpecificity,
        "f1": MulticlassF1Score,
    }
    metrics = {
        "acc": MulticlassAccuracy(n, average="micro"),
        "auroc": MulticlassAUROC(n, average="macro"),
        **{name: cls(n, average="macro") for name, cls in per_class.items()},
        **{
            f"{name}_per_class": ClasswiseWrapper(cls(n, average=None), labels, prefix=f"{name}/")
            for name, cls in per_class.items()
        },
    }
    return MetricCollection(metrics, compute_groups=False)


def metric_inputs(
    probs: torch.Tensor, target: torch.Tensor, positive: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary: the positive class's probability and a 0/1 target. Otherwise unchanged."""
    if probs.shape[1] == 2:
        return probs[:, positive], (target == positive).long()
    return probs, target
