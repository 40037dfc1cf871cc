"""``covidxr-eval ckpt_path=<exported file>``: an exported model (ONNX, int8, ``torch.export``)
tested on the test split of the run it was made from, reported as the run itself was.

The file's JSON records its source checkpoint; the data module is that run's, so the images,
their decoding and occlusion are the run's, and the numbers are compared with its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.inference.forms import form_of, load_model, source_checkpoint
from covidxr.inference.predictors import sidecar
from covidxr.models.module import XRayClassifier
from covidxr.models.predictions import Predictions
from covidxr.reporting.run import compare_with_training_run, report_record
from covidxr.utils.errors import MissingFileError

log = logging.getLogger(__name__)


def evaluate_exported(
    path: str | os.PathLike,
    data_overrides: Mapping[str, Any],
    split_file: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    strict: bool = False,
) -> dict[str, float]:
    """Score the source run's test split with the exported file; write its report."""
    path = Path(path)
    source = source_checkpoint(path)  # named before any model is loaded
    if source is None or not source.is_file():
        raise MissingFileError(
            f"{sidecar(path)} names no checkpoint that is still there ({source}): covidxr-eval "
            f"tests a {form_of(path).name} file on the test split of the run it was exported "
            "from. Export it again from that run's checkpoint."
        )
    predictor = load_model(path)
    model = XRayClassifier.from_checkpoint(source)  # the run's classes and interval settings
    datamodule = RadiographyDataModule.from_checkpoint(source, data_overrides, split_file)
    datamodule.setup("test")
    probs, targets = [], []
    for images, target, _ in datamodule.test_dataloader():
        probs.append(np.asarray(predictor(images), dtype=np.float64))
        targets.append(target.numpy())
    record = Predictions(
        np.arange(sum(len(t) for t in targets)), np.concatenate(targets), np.concatenate(probs)
    )
    log.info("Testing %s (exported from %s) on its run's test split", path, source)
    samples = datamodule.datasets["test"].samples
    metrics = report_record(record, model, samples, output_dir)
    compare_with_training_run(metrics, source, strict=strict)
    return metrics
