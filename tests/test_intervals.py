"""Bootstrap intervals and calibration: the same metrics as torchmetrics, honest widths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from covidxr.cli.train import train
from covidxr.models.metrics import METRIC_NAMES, build_metrics, metric_inputs
from covidxr.reporting.intervals import bootstrap_intervals, metric_samples


def _predictions(classes: int, n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_numpy_metrics_equal_the_modules_torchmetrics(classes: int) -> None:
    probs, targets = _predictions(classes)
    names = ["COVID", "Normal", "Lung_Opacity", "Viral Pneumonia"][:classes]
    metrics = build_metrics(names)
    metrics.update(*metric_inputs(torch.tensor(probs), torch.tensor(targets), positive=0))
    expected = {k: float(v) for k, v in metrics.compute().items() if k in METRIC_NAMES}
    ours = metric_samples(probs[None], targets[None], positive=0)
    assert {k: float(ours[k][0]) for k in expected} == pytest.approx(expected, abs=1e-6)


def test_intervals_contain_the_estimate_and_shrink_with_more_images() -> None:
    small, large = _predictions(2, n=60), _predictions(2, n=2000)
    widths = []
    for probs, targets in (small, large):
        ci = bootstrap_intervals(probs, targets, positive=0, resamples=500, seed=1)
        point = metric_samples(probs[None], targets[None], 0)["acc"][0]
        assert ci["test/acc_ci_low"] <= point <= ci["test/acc_ci_high"]
        widths.append(ci["test/acc_ci_high"] - ci["test/acc_ci_low"])
    assert widths[1] < widths[0] / 3
    again = bootstrap_intervals(*small, positive=0, resamples=500, seed=1)
    assert again == bootstrap_intervals(*small, positive=0, resamples=500, seed=1)  # seeded


def test_a_run_writes_intervals_calibration_and_a_reliability_diagram(
    tmp_path: Path, data_dir: Path
) -> None:
    train(compose_config("train", ["experiment=smoke"], tmp_path, data_dir))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in METRIC_NAMES:
        low, high = metrics[f"test/{name}_ci_low"], metrics[f"test/{name}_ci_high"]
        assert 0.0 <= low <= high <= 1.0
    assert 0.0 <= metrics["test/ece"] <= 1.0
    assert (tmp_path / "reliability_test.png").stat().st_size > 5_000


def test_metrics_the_data_cannot_support_are_undefined_not_zero() -> None:
    """Only positive cases: no specificity and no AUROC (torchmetrics would say 0.0); a class
    absent from a 3-class set: no sensitivity for it, and the macro mean skips it."""
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    one_class = metric_samples(probs[None], np.zeros((1, 3), int), positive=0)
    assert np.isnan(one_class["specificity"][0]) and np.isnan(one_class["auroc"][0])
    assert one_class["sensitivity"][0] == pytest.approx(2 / 3)
    ci = bootstrap_intervals(probs, np.zeros(3, int), positive=0, resamples=50)
    assert np.isnan(ci["test/auroc_ci_low"]) and not np.isnan(ci["test/acc_ci_low"])
    three = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    values = metric_samples(three[None], np.array([[0, 1, 0, 1]]), positive=0)
    assert np.isnan(values["sensitivity/2"][0])
    assert values["sensitivity"][0] == pytest.approx(np.mean([1.0, 1.0]))


def test_epoch_metrics_the_counts_cannot_support_are_nan() -> None:
    """What the LightningModule logs each epoch (val too): no negative case, no specificity."""
    from covidxr.models.metrics import mark_undefined, undefined_metrics

    only_positives = torch.tensor([[3, 1], [0, 0]])  # rows: true COVID, Normal
    assert undefined_metrics(only_positives, ["COVID", "Normal"], 0) == ["auroc", "specificity"]
    nothing_predicted = torch.tensor([[0, 2], [0, 2]])
    assert undefined_metrics(nothing_predicted, ["COVID", "Normal"], 0) == ["precision"]
    names = ["COVID", "Normal", "Lung_Opacity"]
    absent = torch.tensor([[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    values = {f"val/{m}/{n}": torch.tensor(0.5) for m in ("precision", "sensitivity",
              "specificity", "f1") for n in names}  # fmt: skip
    values = mark_undefined(values, "val", absent, names, 0)
    assert torch.isnan(values["val/sensitivity/Lung_Opacity"])
    assert values["val/sensitivity"] == pytest.approx(0.5)  # the mean of the defined classes
    one_class = torch.tensor([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert "auroc" in undefined_metrics(one_class, names, 0)  # no class has both sides
    assert "auroc" not in undefined_metrics(absent, names, 0)


def test_tied_scores_count_one_half_in_every_resample() -> None:
    """All-tied scores give 0.5 (not 0 or 1); partly tied ones equal scipy's Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    targets = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    tied = np.full((1, 8, 2), 0.5)
    assert metric_samples(tied, targets[None], 1)["auroc"][0] == 0.5
    rng = np.random.default_rng(0)
    scores = rng.choice([0.0, 0.3, 1.0], size=(20, 40))  # saturated outputs: many ties
    labels = rng.integers(0, 2, size=(20, 40))
    labels[:, :2] = [0, 1]  # both classes in every row
    probs = np.stack([1 - scores, scores], axis=-1)
    ours = metric_samples(probs, labels, 1)["auroc"]
    for row in range(20):
        positive = labels[row] == 1
        u = mannwhitneyu(scores[row][positive], scores[row][~positive]).statistic
        assert ours[row] == pytest.approx(u / (positive.sum() * (~positive).sum()))
