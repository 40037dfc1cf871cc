"""The numbers a clinical reader asks at an operating point: sensitivity and specificity with
Wilson intervals, PPV and NPV at a prevalence the reader gives (not the dataset's), and the net
benefit of a decision curve (Vickers and Elkin 2006) at that prevalence."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.optimize
import scipy.stats


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson interval of a proportion; NaN for no trials."""
    if trials == 0:
        return math.nan, math.nan
    interval = scipy.stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def predictive_values(
    sensitivity: float, specificity: float, prevalence: float
) -> tuple[float, float]:
    """PPV and NPV by Bayes' rule at ``prevalence``: what a positive or negative call means
    where the disease is as common as that."""
    true_pos = sensitivity * prevalence
    false_pos = (1 - specificity) * (1 - prevalence)
    true_neg = specificity * (1 - prevalence)
    false_neg = (1 - sensitivity) * prevalence
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else math.nan
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else math.nan
    return ppv, npv


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on p(positive) and what it does on one set of images."""

    threshold: float
    source: str  # where the threshold came from
    prespecified: bool  # fixed before the test set was scored
    n_positive: int
    n_negative: int
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    prevalence: float
    ppv: float
    npv: float

    def as_dict(self) -> dict:
        return asdict(self)


def operating_point(
    scores: np.ndarray,
    positive: np.ndarray,
    threshold: float,
    prevalence: float,
    source: str = "0.5 (the arg-max of two classes)",
    prespecified: bool = True,
) -> OperatingPoint:
    """Sensitivity/specificity of ``scores >= threshold`` with intervals, PPV/NPV at
    ``prevalence``."""
    positive = np.asarray(positive, bool)
    called = np.asarray(scores) >= threshold
    tp, fn = int((called & positive).sum()), int((~called & positive).sum())
    tn, fp = int((~called & ~positive).sum()), int((called & ~positive).sum())
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    ppv, npv = predictive_values(sens, spec, prevalence)
    return OperatingPoint(
        threshold, source, prespecified, tp + fn, tn + fp, sens, wilson(tp, tp + fn), spec,
        wilson(tn, tn + fp), prevalence, ppv, npv,
    )  # fmt: skip


def net_benefit(
    scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray, prevalence: float
) -> dict[str, np.ndarray]:
    """Net benefit of treating ``scores >= pt`` at each threshold probability ``pt``, of treating
    all and of treating none, at ``prevalence``: sens * pi - (1 - spec) * (1 - pi) * pt / (1 - pt).

    Sensitivity and specificity come from the images, the prevalence from the reader, so the curve
    holds for a population where the disease is that common (the dataset's ~26% COVID is none).
    """
    positive = np.asarray(positive, bool)
    scores = np.asarray(scores, float)
    odds = thresholds / (1 - thresholds)
    sens = np.array([(scores[positive] >= t).mean() for t in thresholds])
    spec = np.array([(scores[~positive] < t).mean() for t in thresholds])
    return {
        "threshold": thresholds,
        "model": sens * prevalence - (1 - spec) * (1 - prevalence) * odds,
        "treat_all": prevalence - (1 - prevalence) * odds,
        "treat_none": np.zeros_like(thresholds),
    }


def calibration_slope_intercept(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Logistic recalibration of the outcome on logit(p): slope (1 is ideal, < 1 overconfident)
    and calibration-in-the-large intercept (the intercept with the slope fixed at 1; 0 is
    ideal). NaN where a class is missing."""
    positive = np.asarray(positive, float)
    if positive.min() == positive.max():
        return math.nan, math.nan
    p = np.clip(np.asarray(scores, float), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))

    def loss(params: np.ndarray, slope: float | None = None) -> float:
        a, b = (params[0], params[1]) if slope is None else (params[0], slope)
        z = a + b * logit
        return float(np.sum(np.logaddexp(0, z) - positive * z))

    fitted = scipy.optimize.minimize(loss, np.zeros(2), method="BFGS")
    large = scipy.optimize.minimize(lambda a: loss(a, 1.0), np.zeros(1), method="BFGS")
    return float(fitted.x[1]), float(large.x[0])
