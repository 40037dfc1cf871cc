"""Test a model and write what a run reports; shared by ``covidxr-train`` and ``covidxr-eval``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import lightning as L

from covidxr.reporting import (
    METRICS_FILE,
    print_metrics,
    to_floats,
    write_confusion_matrix,
    write_json,
)

log = logging.getLogger(__name__)


def test_and_report(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    output_dir: str | os.PathLike,
    extra_metrics: Mapping[str, object] = (),
    test: bool = True,
) -> dict[str, float]:
    """Test ``ckpt_path`` (or the model as it is); write ``metrics.json`` and the confusion matrix.

    Files go to ``output_dir`` from rank 0 only. The confusion matrix is the test set's, or the
    last validation epoch's when there is no test.
    """
    metrics = to_floats(dict(extra_metrics))
    if test:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics |= to_floats(trainer.callback_metrics)
    if trainer.is_global_zero:
        output_dir = Path(output_dir)
        write_json(output_dir / METRICS_FILE, dict(sorted(metrics.items())))
        stage = "test" if test else "val"
        matrix = getattr(model, "confusion_matrices", {}).get(stage)
        if matrix is not None:
            write_confusion_matrix(
                output_dir, matrix, model.class_names, f"confusion_matrix_{stage}"
            )
        print_metrics(metrics, output_dir)
    return metrics
