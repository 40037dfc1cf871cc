"""How much of a number is real: bootstrap confidence intervals and calibration, from a run's
record of predictions (``covidxr.models.predictions``), and the t-interval of a mean over runs.

Intervals come from a stratified bootstrap: each resample draws, with replacement, as many images
of each class as the test split holds, so every resample keeps the split's class balance. The
metrics are those of the LightningModule (binary with the positive class; macro one-vs-rest for
3-4 classes), computed for all resamples at once with NumPy.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from torchmetrics.functional.classification import (
    binary_calibration_error,
    multiclass_calibration_error,
)

from covidxr.models.metrics import METRIC_NAMES
from covidxr.utils.figures import saved_figure


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` (runs, seeds, per-seed differences) and its t-interval
    (``scipy.stats.ttest_1samp(...).confidence_interval``); NaN bounds for fewer than two
    values, the mean itself when they do not vary."""
    values = [float(v) for v in values if not math.isnan(v)]
    mean = statistics.fmean(values) if values else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    if statistics.pstdev(values) == 0:
        return mean, mean, mean
    interval = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(level)
    return mean, float(interval.low), float(interval.high)


def stratified_resamples(targets: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, n]`` indices: per class, draws with replacement of that class's images."""
    rng = np.random.default_rng(seed)
    columns = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        columns.append(members[rng.integers(0, len(members), (resamples, len(members)))])
    return np.concatenate(columns, axis=1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0: the metric is undefined
    there (no positive case, no negative case, nothing predicted positive), never 0."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _nanmean(values: list[np.ndarray]) -> np.ndarray:
    """Mean over the classes where a metric is defined; NaN where it is defined for none."""
    stacked = np.asarray(values, dtype=float)
    count = (~np.isnan(stacked)).sum(axis=0)
    total = np.nansum(stacked, axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Per row: the Mann-Whitney AUROC of ``scores`` for the ``positive`` mask (``[R, n]``).

    Tied scores share their mid-rank, so a positive tied with a negative counts one half (as in
    torchmetrics' AUROC and DeLong's test): saturated softmax outputs are ties, and ranking
    them by position would bias every resample's AUROC towards 0 or 1."""
    ranks = scipy.stats.rankdata(scores, method="average", axis=1)
    n_pos = positive.sum(axis=1).astype(float)
    n_neg = positive.shape[1] - n_pos
    rank_sum = (ranks * positive).sum(axis=1)
    return _ratio(rank_sum - n_pos * (n_pos + 1) / 2, n_pos * n_neg)


def _one_vs_rest(predicted: np.ndarray, actual: np.ndarray) -> dict[str, np.ndarray]:
    tp = (predicted & actual).sum(axis=1).astype(float)
    fp = (predicted & ~actual).sum(axis=1).astype(float)
    fn = (~predicted & actual).sum(axis=1).astype(float)
    tn = (~predicted & ~actual).sum(axis=1).astype(float)
    return {
        "precision": _ratio(tp, tp + fp),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def metric_samples(probs: np.ndarray, targets: np.ndarray, positive: int) -> dict[str, np.ndarray]:
    """Every metric of ``METRIC_NAMES`` for each row of ``probs [R, n, C]`` / ``targets [R, n]``
    (and ``<metric>/<class index>`` for 3-4 classes); NaN where the data leave it undefined."""
    if probs.shape[-1] == 2:
        scores = probs[..., positive]
        actual = targets == positive
        values = _one_vs_rest(scores > 0.5, actual)  # torchmetrics' binary threshold
        values["acc"] = ((scores > 0.5) == actual).mean(axis=1)
        values["auroc"] = _auroc(scores, actual)
        return values
    predicted = probs.argmax(axis=-1)
    per_class = [_one_vs_rest(predicted == c, targets == c) for c in range(probs.shape[-1])]
    values = {name: _nanmean([pc[name] for pc in per_class]) for name in per_class[0]}
    values |= {f"{name}/{c}": pc[name] for c, pc in enumerate(per_class) for name in pc}
    values["acc"] = (predicted == targets).mean(axis=1)
    aurocs = [_auroc(probs[..., c], targets == c) for c in range(probs.shape[-1])]
    values["auroc"] = _nanmean(aurocs)
    return values


def bootstrap_intervals(
    probs: np.ndarray,
    targets: np.ndarray,
    positive: int,
    stage: str = "test",
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """``<stage>/<metric>_ci_low`` and ``_ci_high``: percentile intervals at ``level``."""
    if len(targets) == 0 or resamples < 1:
        return {}
    rows = stratified_resamples(targets, resamples, seed)
    samples = metric_samples(probs[rows], targets[rows], positive)
    tail = (1 - level) / 2
    intervals = {}
    for name in METRIC_NAMES:
        defined = samples[name][~np.isnan(samples[name])]
        low, high = np.quantile(defined, [tail, 1 - tail]) if len(defined) else (np.nan, np.nan)
        intervals[f"{stage}/{name}_ci_low"] = float(low)
        intervals[f"{stage}/{name}_ci_high"] = float(high)
    return intervals


def calibration_error(
    probs: np.ndarray, targets: np.ndarray, positive: int, bins: int = 15
) -> float:
    """Expected calibration error (torchmetrics): of p(positive) for two classes, else of the
    top class."""
    p, t = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(targets, dtype=torch.long)
    if p.shape[1] == 2:
        scores = p[:, positive].contiguous()
        return float(binary_calibration_error(scores, (t == positive).long(), n_bins=bins))
    return float(multiclass_calibration_error(p, t, p.shape[1], n_bins=bins))


def reliability_diagram(
    probs: np.ndarray,
    targets: np.ndarray,
    path: str | os.PathLike,
    bins: int = 15,
    stage: str = "test",
) -> Path:
    """Accuracy against confidence (the top class's probability) in equal-width bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    centres, accuracy, counts = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracy.append(correct[inside].mean())
            counts.append(int(inside.sum()))
    with saved_figure(path, figsize=(4.5, 4.5), dpi=120) as ax:
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.plot(centres, accuracy, "o-", label="model")
        for x, y, n in zip(centres, accuracy, counts, strict=True):
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Reliability ({stage} split; numbers: images per bin)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    return Path(path)
