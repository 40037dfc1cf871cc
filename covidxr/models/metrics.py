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


PER_CLASS = ("precision", "sensitivity", "specificity", "f1")


def undefined_metrics(
    confusion: torch.Tensor, class_names: Sequence[str], positive: int
) -> list[str]:
    """The metrics (as named under a stage) that counts ``[true, predicted]`` cannot support:
    no positive case means no sensitivity, no negative case no specificity, nothing predicted
    positive no precision, and AUROC needs both. torchmetrics reports 0.0 for each of them."""
    counts = confusion.long()
    actual, predicted, total = counts.sum(1), counts.sum(0), int(counts.sum())

    def undefined(c: int) -> list[str]:
        out = []
        if actual[c] == 0:
            out.append("sensitivity")
        if total - actual[c] == 0:
            out.append("specificity")
        if predicted[c] == 0:
            out.append("precision")
            if actual[c] == 0:
                out.append("f1")
        return out

    if len(class_names) == 2:
        found = undefined(positive)
        if actual[positive] in (0, total):
            found.append("auroc")
        return sorted(found)
    found = [f"{m}/{name}" for c, name in enumerate(class_names) for m in undefined(c)]
    if int((actual > 0).sum()) < 2:  # one class vs the rest needs both, for every class
        found.append("auroc")
    return sorted(found)


def mark_undefined(
    values: dict[str, torch.Tensor],
    stage: str,
    confusion: torch.Tensor,
    class_names: Sequence[str],
    positive: int,
) -> dict[str, torch.Tensor]:
    """``values`` with NaN for what the counts cannot support; for 3-4 classes the macro means
    over the classes where a metric is defined."""
    nan = torch.tensor(float("nan"))
    for name in undefined_metrics(confusion, class_names, positive):
        values[f"{stage}/{name}"] = nan
    if len(class_names) > 2:
        for metric in PER_CLASS:
            per_class = torch.stack(
                [values[f"{stage}/{metric}/{n}"].float().cpu() for n in class_names]
            )
            defined = per_class[~per_class.isnan()]
            values[f"{stage}/{metric}"] = defined.mean() if len(defined) else nan
    return values


def point_metrics(
    probs: torch.Tensor, target: torch.Tensor, class_names: Sequence[str], positive: int, stage: str
) -> dict[str, float]:
    """Every metric of a whole split at once, as the module logs them (NaN where undefined): for
    probabilities that no single module produced (an ensemble's mean)."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    metrics = build_metrics(class_names)
    metrics.update(*metric_inputs(probs, target, positive))
    values = {f"{stage}/{k}": v for k, v in metrics.compute().items()}
    confusion = MulticlassConfusionMatrix(len(class_names))(probs.argmax(dim=1), target)
    values = mark_undefined(values, stage, confusion, class_names, positive)
    return {k: float(v) for k, v in sorted(values.items())}
