"""The accuracy gate on probabilities alone: no model needed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from covidxr.inference.gate import GateLimits, GateResult, compare_forms
from covidxr.inference.quantize import calibration_files
from covidxr.models.preprocessing import Preprocessing

PREP = Preprocessing(image_size=32, mean=(0.5,), std=(0.25,), class_names=("COVID", "Normal"))


def _two_class(p_covid: np.ndarray) -> np.ndarray:
    return np.stack([p_covid, 1 - p_covid], axis=1)


def test_a_model_that_calls_everything_positive_is_refused_though_labels_agree() -> None:
    # Nine COVID images, one Normal that fp32 ranks last but still calls COVID: a model calling
    # every image COVID with one probability keeps every label, and moves the AUROC (1 -> 0.5).
    targets = np.array([0] * 9 + [1])
    fp32 = _two_class(np.array([0.9, 0.85, 0.8, 0.75, 0.7, 0.68, 0.66, 0.64, 0.62, 0.55]))
    degenerate = _two_class(np.full(10, 0.999))
    result = compare_forms("int8", fp32, degenerate, targets, PREP)
    assert result.agreement == 1.0
    assert not result.passed
    assert result.auroc_change == pytest.approx(-0.5)
    assert result.prob_change == pytest.approx(0.999 - 0.55)


def test_an_auroc_gain_beyond_the_limit_is_refused_like_a_loss() -> None:
    targets = np.array([0, 0, 1, 1])
    fp32 = _two_class(np.array([0.6, 0.4, 0.5, 0.3]))  # AUROC 0.75
    better = _two_class(np.array([0.6, 0.52, 0.5, 0.3]))  # AUROC 1.0, one p moved by 0.12
    result = compare_forms("int8", fp32, better, targets, PREP, GateLimits(min_agreement=0.5))
    assert result.auroc_change == pytest.approx(0.25)
    assert not result.passed
    assert "+0.2500" in result.describe()
    widened = GateLimits(max_auroc_change=0.3, min_agreement=0.5)
    assert compare_forms("int8", fp32, better, targets, PREP, widened).passed


def test_probabilities_that_move_too_far_are_refused_with_labels_and_auroc_kept() -> None:
    targets = np.array([0, 0, 1, 1])
    fp32 = _two_class(np.array([0.95, 0.9, 0.2, 0.1]))
    moved = _two_class(np.array([0.6, 0.55, 0.45, 0.4]))  # same ranks, same labels
    result = compare_forms("int8", fp32, moved, targets, PREP)
    assert result.auroc_change == 0 and result.agreement == 1
    assert not result.passed and result.prob_change == pytest.approx(0.35)
    assert compare_forms("int8", fp32, fp32.copy(), targets, PREP).passed


def test_a_recorded_result_reads_back_and_an_old_record_does_not() -> None:
    targets = np.array([0, 1])
    fp32 = _two_class(np.array([0.7, 0.2]))
    result = compare_forms("bf16", fp32, fp32, targets, PREP)
    assert GateResult.from_dict(result.as_dict()) == result
    with pytest.raises((TypeError, KeyError)):
        GateResult.from_dict({"form": "bf16", "auroc_drop": 0.0, "passed": True})


def test_a_calibration_set_missing_a_class_or_tiny_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = [Path(f"{i}.png") for i in range(40)]
    labels = [0] * 20 + [1] * 20
    with caplog.at_level(logging.WARNING):
        assert len(calibration_files(files, labels, 40, 0, ("COVID", "Normal"))) == 40
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        (one,) = calibration_files(files, labels, 1, 0, ("COVID", "Normal"))
    (warning,) = caplog.records
    name = "Normal" if one in files[:20] else "COVID"
    assert "calib_images=1" in warning.message and f"with no {name}" in warning.message
