"""One row per setting: the mean of each metric over its runs with its interval, the study's
numbers beside it, and the out-of-fold mean of a cross-validation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import scipy.stats

from covidxr.models.metrics import METRIC_NAMES
from covidxr.reporting.intervals import t_interval
from covidxr.reporting.jobs import Job, setting_of, varied_keys
from covidxr.weights.registry import REGISTRY

#: The study's validation results (%), keyed by backbone key, from the registry.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    spec.key: dict(spec.paper_results) for spec in REGISTRY.values() if spec.paper_results
}


def defined(values: Iterable[float | None]) -> list[float]:
    """Percentages of the runs where a metric is defined (an undefined one, NaN, is no 0)."""
    return [100 * v for v in values if v is not None and not math.isnan(v)]


def summarize(jobs: Sequence[Job], stage: str = "test") -> list[dict[str, object]]:
    """One row per setting: mean, std and 95% interval (%) of each metric over its jobs.

    One run: its bootstrap interval over test images. Several (seeds): the t-interval of the
    mean over runs. ``external_<metric>`` columns when runs were also tested on external data.
    """
    keys = varied_keys(jobs)
    rows = []
    for setting in sorted({setting_of(j, keys) for j in jobs}):
        group = [j for j in jobs if setting_of(j, keys) == setting]
        done = [j for j in group if j.metrics is not None]
        backbones = {j.backbone for j in group}
        backbone = backbones.pop() if len(backbones) == 1 else "various"
        row: dict[str, object] = {
            "setting": setting,
            "backbone": backbone,
            "runs": len(done),
            "failed": sum(j.status == "failed" for j in group),
            "seeds": " ".join(str(j.seed) for j in done),
        }
        for metric in METRIC_NAMES:
            values = defined(j.metrics.get(f"{stage}/{metric}") for j in done)
            mean, low, high = percent_interval(*t_interval(values))
            if len(done) == 1 and f"{stage}/{metric}_ci_low" in done[0].metrics:
                low = 100 * done[0].metrics[f"{stage}/{metric}_ci_low"]
                high = 100 * done[0].metrics[f"{stage}/{metric}_ci_high"]
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = (
                statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
            external = defined(j.metrics.get(f"external/{metric}") for j in done)
            row[f"external_{metric}_mean"] = statistics.fmean(external) if external else math.nan
            row[f"paper_{metric}"] = PAPER_RESULTS.get(backbone, {}).get(metric, math.nan)
        row |= cross_validation(done)
        rows.append(row)
    return rows


def percent_interval(mean: float, low: float, high: float) -> tuple[float, float, float]:
    """A t-interval of a percentage clipped to 0..100 (it knows no metric's bounds); NaN kept."""
    return mean, max(low, 0.0), min(high, 100.0)


def corrected_interval(
    values: Sequence[float], test_size: float, train_size: float
) -> tuple[float, float, float]:
    """Mean over folds and the Nadeau-Bengio corrected resampled t-interval (95%): the variance
    over folds scaled by 1/K + n_val/n_train, because folds share their training images."""
    mean = statistics.fmean(values) if values else math.nan
    if len(values) < 2 or train_size <= 0:
        return mean, math.nan, math.nan
    variance = (1 / len(values) + test_size / train_size) * statistics.variance(values)
    half = float(scipy.stats.t.ppf(0.975, len(values) - 1)) * math.sqrt(variance)
    return mean, mean - half, mean + half


def cross_validation(jobs: Sequence[Job]) -> dict[str, object]:
    """``cv_<metric>_mean/_ci_low/_ci_high`` (%) over the folds of a setting, per seed pooled."""
    folds = [j for j in jobs if j.metrics and "oof/images" in j.metrics]
    row: dict[str, object] = {"cv_folds": len(folds)}
    for metric in METRIC_NAMES:
        values = defined(j.metrics.get(f"oof/{metric}") for j in folds)
        test = statistics.fmean(j.metrics["oof/images"] for j in folds) if folds else 0.0
        train = statistics.fmean(j.metrics["oof/train_images"] for j in folds) if folds else 0.0
        mean, low, high = percent_interval(*corrected_interval(values, test, train))
        row[f"cv_{metric}_mean"], row[f"cv_{metric}_ci_low"], row[f"cv_{metric}_ci_high"] = (
            mean,
            low,
            high,
        )
    return row
