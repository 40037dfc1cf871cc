"""The page's figures, each a PNG file under ``report_files/`` that the page inlines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from covidxr.utils.figures import saved_figure


def roc_pr_figure(path: Path, curves: Sequence[Mapping]) -> Path:
    """ROC and precision-recall curves of every setting overlaid (``label``, ``scores``,
    ``positive`` per curve)."""
    with saved_figure(path, 1, 2, figsize=(10, 4.4), dpi=110) as (roc, pr):
        for curve in curves:
            fpr, tpr, recall, precision = _curves(curve["scores"], curve["positive"])
            roc.plot(fpr, tpr, label=curve["label"])
            pr.plot(recall, precision, label=curve["label"])
        roc.plot([0, 1], [0, 1], "--", color="grey")
        roc.set_xlabel("1 - specificity")
        roc.set_ylabel("sensitivity")
        roc.set_title("ROC (legend: AUROC [DeLong 95% interval])", fontsize=9)
        pr.set_xlabel("recall (sensitivity)")
        pr.set_ylabel("precision (PPV at the test set's prevalence)")
        pr.set_title("Precision-recall", fontsize=9)
        for ax in (roc, pr):
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=7, loc="lower right" if ax is roc else "lower left")
    return path


def _curves(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, ...]:
    """FPR, TPR, recall and precision at every distinct threshold, highest first."""
    positive = np.asarray(positive, bool)
    thresholds = np.unique(scores)[::-1]
    tp = np.array([(scores[positive] >= t).sum() for t in thresholds], float)
    fp = np.array([(scores[~positive] >= t).sum() for t in thresholds], float)
    tpr = np.concatenate([[0], tp / max(positive.sum(), 1)])
    fpr = np.concatenate([[0], fp / max((~positive).sum(), 1)])
    precision = np.concatenate([[1], tp / np.maximum(tp + fp, 1)])
    return fpr, tpr, tpr, precision


def reliability_figure(path: Path, curves: Sequence[Mapping], bins: int = 10) -> Path:
    """Observed share of positives against the predicted p(positive), per setting."""
    edges = np.linspace(0, 1, bins + 1)
    with saved_figure(path, figsize=(4.8, 4.4), dpi=110) as ax:
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        for curve in curves:
            scores, positive = np.asarray(curve["scores"]), np.asarray(curve["positive"], bool)
            which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
            xs = [scores[which == b].mean() for b in range(bins) if (which == b).any()]
            ys = [positive[which == b].mean() for b in range(bins) if (which == b).any()]
            ax.plot(xs, ys, "o-", markersize=3, label=curve["label"])
        ax.set_xlabel("predicted p(positive)")
        ax.set_ylabel("observed share of positives")
        ax.set_title("Reliability", fontsize=9)
        ax.legend(fontsize=7)
    return path


def decision_curve_figure(path: Path, curve: Mapping[str, np.ndarray], prevalence: float) -> Path:
    with saved_figure(path, figsize=(5.6, 4.2), dpi=110) as ax:
        ax.plot(curve["threshold"], curve["model"], label="model")
        ax.plot(curve["threshold"], curve["treat_all"], label="treat all")
        ax.plot(curve["threshold"], curve["treat_none"], label="treat none")
        ax.set_ylim(-0.05, max(prevalence, 0.01) * 1.15)
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.set_title(f"Decision curve at prevalence {prevalence:g}", fontsize=9)
        ax.legend(fontsize=8)
    return path


def flow_figure(path: Path, boxes: Sequence[tuple[str, str]]) -> Path:
    """Boxes top to bottom with arrows: the flow of images (STARD/CLAIM flow diagram)."""
    with saved_figure(path, figsize=(6, 0.4 + 0.75 * len(boxes)), dpi=110) as ax:
        ax.axis("off")
        n = len(boxes)
        for i, (title, text) in enumerate(boxes):
            y = 1 - (i + 0.5) / n
            ax.text(0.5, y, f"{title}\n{text}", ha="center", va="center", fontsize=9,
                    bbox={"boxstyle": "round", "facecolor": "#eef3fb", "edgecolor": "#557"},
                    transform=ax.transAxes)  # fmt: skip
            if i < n - 1:
                ax.annotate("", xy=(0.5, 1 - (i + 1.2) / n), xytext=(0.5, 1 - (i + 0.8) / n),
                            xycoords="axes fraction",
                            arrowprops={"arrowstyle": "->", "color": "#557"})  # fmt: skip
    return path


def label_efficiency_figure(
    path: Path, lines: Mapping[str, Sequence[tuple[float, float, float, float]]]
) -> Path:
    """Test AUROC (mean over seeds, t-interval bars) against labeled training images (log x),
    one line per setting; ``lines``: per setting ``(images, mean, low, high)`` points."""
    with saved_figure(path, figsize=(5.6, 4.2), dpi=110) as ax:
        for label, points in lines.items():
            xs, ys, lows, highs = (np.asarray(v, float) for v in zip(*points, strict=True))
            below = np.nan_to_num(ys - lows, nan=0.0).clip(0)
            above = np.nan_to_num(highs - ys, nan=0.0).clip(0)
            ax.errorbar(xs, ys, yerr=[below, above], fmt="o-", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("labeled training images")
        ax.set_ylabel("test AUROC (mean over seeds, 95% t-interval)")
        ax.set_title("Label efficiency", fontsize=9)
        ax.legend(fontsize=7)
    return path
