"""Per-image paired tests between runs that scored the same test images.

Two runs whose ``predictions_<stage>.csv`` list the same images are compared image by image:

* AUROC (the positive class, COVID, against the rest): DeLong's test for two correlated ROC
  curves, with the fast midrank algorithm of Sun and Xu (2014);
* accuracy (arg-max labels): the exact McNemar test on the discordant images.

Against the best setting, p-values are adjusted by Holm over all the settings compared with it.
With several seeds per setting, each seed's pair is tested, and a combined row gives the paired
difference over seeds with its t-interval (p from the one-sample t-test).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats

from covidxr.reporting.intervals import t_interval
from covidxr.utils.errors import DatasetError

ALPHA = 0.05
PAIRED_COLUMNS = (
    "setting_a",
    "setting_b",
    "metric",
    "test",
    "n_images",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "verdict",
    "seeds",
)


@dataclass(frozen=True)
class Record:
    """One run's predictions on a split: images (paths), true labels, positive-class scores and
    arg-max correctness, in path order."""

    paths: tuple[str, ...]
    targets: np.ndarray
    probs: np.ndarray
    positive: int
    classes: tuple[str, ...] = ()

    @property
    def scores(self) -> np.ndarray:
        return self.probs[:, self.positive]

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(axis=1) == self.targets


def read_record(path: str | Path) -> Record:
    """``predictions_<stage>.csv`` (``path,group,label,p_<Class>...``) as a ``Record``."""
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        classes = [c[2:] for c in reader.fieldnames or () if c.startswith("p_")]
        rows = sorted(reader, key=lambda r: r["path"])
    if not classes or not rows:
        raise DatasetError(f"{path} holds no predictions (columns path,group,label,p_<Class>).")
    return Record(
        paths=tuple(r["path"] for r in rows),
        targets=np.array([int(r["label"]) for r in rows]),
        probs=np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows]),
        positive=classes.index("COVID") if "COVID" in classes else 0,
        classes=tuple(classes),
    )


@dataclass(frozen=True)
class PairedResult:
    """``a - b`` with its 95% interval and two-sided p."""

    test: str
    n_images: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def _midrank(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank."""
    return scipy.stats.rankdata(values, method="average")


def _components(scores: np.ndarray, positive: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and DeLong's structural components: per positive the share of negatives it
    outranks, per negative the share of positives above it (Sun and Xu's midrank form)."""
    scores = np.asarray(scores, float)
    m, n = int(positive.sum()), int((~positive).sum())
    x, y = scores[positive], scores[~positive]
    tx, ty, tz = _midrank(x), _midrank(y), _midrank(np.concatenate([x, y]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    return auc, (tz[:m] - tx) / n, 1.0 - (tz[m:] - ty) / m


def delong(targets: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> PairedResult:
    """DeLong's test of AUROC(a) - AUROC(b) on the same images (Sun and Xu's fast algorithm).

    ``targets`` are 1 for positives; ties count one half, as in the Mann-Whitney AUROC.
    """
    positive = np.asarray(targets).astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return PairedResult("DeLong", m + n, math.nan, math.nan, math.nan, math.nan)
    aucs, v10, v01 = zip(*(_components(s, positive) for s in (scores_a, scores_b)), strict=True)
    s10 = np.cov(np.array(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.array(v01)) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if variance <= 1e-15:
        # No estimated variance (a handful of images, identical structural components): the
        # z statistic is undefined, and nothing shows the difference is real: p = 1, as the
        # reference implementations give; no interval is claimed.
        return PairedResult("DeLong", m + n, difference, math.nan, math.nan, 1.0)
    se = math.sqrt(variance)
    z = difference / se
    p = float(2 * scipy.stats.norm.sf(abs(z)))
    half = float(scipy.stats.norm.ppf(0.975)) * se
    return PairedResult("DeLong", m + n, difference, difference - half, difference + half, p)


def auroc_interval(targets: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """One AUROC with DeLong's 95% interval (clipped to [0, 1]); NaN where a class is absent,
    and no interval where the estimated variance is zero."""
    positive = np.asarray(targets).astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        return math.nan, math.nan, math.nan
    auc, v10, v01 = _components(scores, positive)
    variance = (np.var(v10, ddof=1) / m if m > 1 else 0.0) + (
        np.var(v01, ddof=1) / n if n > 1 else 0.0
    )
    if variance <= 1e-15:
        return auc, math.nan, math.nan
    half = float(scipy.stats.norm.ppf(0.975)) * math.sqrt(variance)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedResult:
    """Exact McNemar test of accuracy(a) - accuracy(b): a binomial test on the images exactly
    one of them gets right; the interval is the Wald interval of the paired difference."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = float(scipy.stats.binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    difference = (only_a - only_b) / n if n else math.nan
    se = math.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n if n else math.nan
    half = float(scipy.stats.norm.ppf(0.975)) * se
    return PairedResult("exact McNemar", n, difference, difference - half, difference + half, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (equal to statsmodels' ``multipletests(method="holm")``);
    NaN p-values stay NaN and do not count."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running, count = 0.0, len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[i] = running
    return adjusted


def over_seeds(differences: Sequence[float]) -> PairedResult:
    """The per-seed differences combined: mean, 95% t-interval, one-sample t-test p."""
    values = [d for d in differences if not math.isnan(d)]
    mean, low, high = t_interval(values)
    if len(values) < 2:
        p = math.nan
    elif low == high:  # no spread over seeds: the t statistic is undefined
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(scipy.stats.ttest_1samp(values, 0.0).pvalue)
    return PairedResult("paired t over seeds", 0, mean, low, high, p)


def compare_records(a: Record, b: Record, metric: str) -> PairedResult:
    """``metric`` (``auroc`` or ``acc``) of ``a`` minus ``b``, image by image."""
    if a.paths != b.paths:
        raise DatasetError("the two runs scored different images: they cannot be paired")
    if metric == "auroc":
        return delong(a.targets == a.positive, a.scores, b.scores)
    return mcnemar(a.correct, b.correct)


def verdict(difference: float, p_holm: float) -> str:
    """What a reviewer reads: better, worse, or indistinguishable at Holm-adjusted 5%."""
    if math.isnan(p_holm):
        return "untestable (one class only, or one seed)"
    if p_holm >= ALPHA:
        return "indistinguishable (p_holm >= 0.05)"
    return "better" if difference > 0 else "worse"
