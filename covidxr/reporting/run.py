"""What one run reports: ``metrics.json``, the confusion matrix, the record of predictions and
what is computed from it (intervals, calibration), and the printed table.

Shared by ``covidxr-train`` and ``covidxr-eval``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.table import Table

from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.data.splitting.splits import Sample
from covidxr.models.metrics import point_metrics
from covidxr.models.module import XRayClassifier
from covidxr.models.predictions import Predictions
from covidxr.reporting.intervals import (
    bootstrap_intervals,
    calibration_error,
    reliability_diagram,
)
from covidxr.run_folder import RunFolder
from covidxr.utils.errors import ConfigError
from covidxr.utils.figures import saved_figure
from covidxr.utils.io import atomic_write, write_json
from covidxr.utils.timing import STOPWATCH

log = logging.getLogger(__name__)


def to_floats(metrics: Mapping[str, object]) -> dict[str, float]:
    """Tensors and numbers to floats, keys sorted; anything else is left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return dict(sorted(out.items()))


def write_confusion_matrix(
    stem: str | os.PathLike, matrix: torch.Tensor, class_names: Sequence[str]
) -> tuple[Path, Path]:
    """``<stem>.csv`` (rows: true class, columns: predicted) and a ``<stem>.png`` heat map."""
    stem = Path(stem)
    counts = matrix.long().tolist()
    csv_path = stem.with_name(f"{stem.name}.csv")
    with atomic_write(csv_path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *class_names])
        writer.writerows([name, *row] for name, row in zip(class_names, counts, strict=True))
    n = len(class_names)
    png_path = stem.with_name(f"{stem.name}.png")
    with saved_figure(png_path, figsize=(1.6 + 1.1 * n, 1.2 + 1.1 * n), dpi=120) as ax:
        ax.imshow(matrix.float().numpy(), cmap="Blues")
        peak = max(max(row) for row in counts) or 1
        for i, row in enumerate(counts):
            for j, value in enumerate(row):
                colour = "white" if value > peak / 2 else "black"
                ax.text(j, i, str(value), ha="center", va="center", color=colour)
        ax.set_xticks(range(n), class_names, rotation=30, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(stem.name.replace("_", " "))
    return csv_path, png_path


def _number(value: float | None) -> str:
    """A metric's cell: blank when the stage has none, n/a when the data leave it undefined."""
    if value is None:
        return ""
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def metrics_table(metrics: Mapping[str, float], title: str) -> Table:
    """val/test metrics side by side with the test intervals, per-class rows last."""
    stages = [s for s in ("val", "test", "external") if any(k.startswith(f"{s}/") for k in metrics)]
    names = sorted(
        {
            k.split("/", 1)[1]
            for k in metrics
            if k.split("/", 1)[0] in stages and not k.endswith(("_ci_low", "_ci_high"))
        },
        key=lambda name: ("/" in name, name),
    )
    table = Table(title=title)
    table.add_column("metric")
    for stage in stages:
        table.add_column(stage, justify="right")
    intervals = any(k.endswith("_ci_low") for k in metrics)
    if intervals:
        table.add_column("test 95% interval", justify="right")
    for name in names:
        cells = [_number(metrics.get(f"{stage}/{name}")) for stage in stages]
        if intervals:
            low, high = metrics.get(f"test/{name}_ci_low"), metrics.get(f"test/{name}_ci_high")
            if low is None:
                cells.append("")
            else:
                cells.append("n/a" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]")
        table.add_row(name, *cells)
    return table


def print_metrics(metrics: Mapping[str, float], output_dir: str | os.PathLike) -> None:
    console = Console()
    console.print(metrics_table(metrics, "Metrics"))
    console.print(f"Run directory: {output_dir}", highlight=False, soft_wrap=True)


def record_metrics(record: Predictions, model: XRayClassifier, stage: str) -> dict[str, float]:
    """``<stage>/ece`` and the bootstrap intervals of every metric, from the record (the point
    values, NaN where the data leave them undefined, are the module's)."""
    hp = model.hparams
    values = {f"{stage}/ece": calibration_error(record.probs, record.targets, model.positive)}
    values |= bootstrap_intervals(
        record.probs,
        record.targets,
        model.positive,
        stage=stage,
        resamples=hp.get("ci_resamples", 1000),
        level=hp.get("ci_level", 0.95),
        seed=hp.get("ci_seed", 0),
    )
    return values


def report_record(
    record: Predictions,
    model: XRayClassifier,
    samples: Sequence[Sample],
    output_dir: str | os.PathLike,
    extra: Mapping[str, float] = (),
) -> dict[str, float]:
    """A test record computed outside the module (an ensemble's mean, an exported file's
    probabilities) reported as any run's: its metrics (``model``'s classes and interval
    settings), ``predictions_test.csv`` and ``metrics.json``."""
    probs, targets = torch.from_numpy(record.probs), torch.from_numpy(record.targets)
    metrics = point_metrics(probs, targets, model.class_names, model.positive, "test")
    metrics |= record_metrics(record, model, "test") | dict(extra)
    folder = RunFolder(Path(output_dir))
    write_predictions(folder.predictions("test"), record, samples, model.class_names)
    write_json(folder.metrics, dict(sorted(metrics.items())))
    print_metrics(metrics, output_dir)
    return metrics


def write_predictions(
    path: str | os.PathLike, record: Predictions, samples: Sequence[Sample], names: Sequence[str]
) -> Path:
    """``path,group,label,p_<Class>...``: one row per image of the split, in dataset order."""
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "group", "label", *[f"p_{name}" for name in names]])
        for index, target, probs in zip(record.indices, record.targets, record.probs, strict=True):
            sample = samples[int(index)]
            if sample.label != int(target):
                raise RuntimeError(
                    f"prediction {index} is not {sample.path}'s: record out of order"
                )
            writer.writerow(
                [sample.path, sample.group_key, sample.label, *[f"{p:.6f}" for p in probs]]
            )
    return Path(path)


def report_predictions(
    trainer: L.Trainer,
    model: XRayClassifier,
    samples: Sequence[Sample],
    output_dir: str | os.PathLike,
    stage: str,
) -> dict[str, float]:
    """What the last test's record gives: intervals and ECE (also sent to the loggers), the
    reliability diagram and ``predictions_<stage>.csv`` (files from rank 0)."""
    record = model.test_predictions
    if record is None:
        return {}
    with STOPWATCH.phase("report/bootstrap"):
        values = record_metrics(record, model, stage)
    if trainer.is_global_zero:
        folder = RunFolder(Path(output_dir))
        reliability_diagram(record.probs, record.targets, folder.reliability(stage), stage=stage)
        write_predictions(folder.predictions(stage), record, samples, model.class_names)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
            logger.save()
    return values


def stop_if_signalled(trainer: L.Trainer) -> None:
    """A signal during the last test batch lets the loop end: stop before the report, as for a
    signal in any other batch (the job ends with exit 143; ``resume=auto`` tests again)."""
    if trainer.received_sigterm:
        raise SIGTERMException


def test_and_report(
    trainer: L.Trainer,
    model: XRayClassifier,
    datamodule: RadiographyDataModule,
    ckpt_path: str | None,
    output_dir: str | os.PathLike,
    extra_metrics: Mapping[str, object] = (),
    test: bool = True,
) -> dict[str, float]:
    """Test ``ckpt_path`` (or the model as it is); write ``metrics.json``, the confusion matrix
    and the record of test predictions.

    Files go to ``output_dir`` from rank 0 only. The confusion matrix is the test set's, or the
    last validation epoch's when there is no test.
    """
    metrics = to_floats(dict(extra_metrics))
    if test:
        model.test_predictions = None
        with STOPWATCH.phase("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        stop_if_signalled(trainer)
        metrics |= to_floats(trainer.callback_metrics)
        samples = datamodule.datasets["test"].samples
        with STOPWATCH.phase("report"):
            metrics |= report_predictions(trainer, model, samples, output_dir, "test")
    if trainer.is_global_zero:
        folder = RunFolder(Path(output_dir))
        stage = "test" if test else "val"
        matrix = model.confusion_matrices.get(stage)
        with STOPWATCH.phase("report"):
            if matrix is not None:
                write_confusion_matrix(folder.confusion_matrix(stage), matrix, model.class_names)
        write_json(folder.timings, dict(STOPWATCH.seconds))
        write_json(folder.metrics, dict(sorted(metrics.items())))  # last: the run is finished
        print_metrics(metrics, output_dir)
    return metrics


def test_as(
    trainer: L.Trainer,
    model: XRayClassifier,
    stage: str,
    datamodule: RadiographyDataModule,
    split: str,
    output_dir: str | os.PathLike,
    **test_options,
) -> dict[str, float]:
    """Run the test loop on the data module's ``split`` (the test loader unless ``dataloaders``
    is given) and report it as ``stage`` (``external``, ``oof``): metrics as ``<stage>/...``
    and what the record gives, ``predictions_<stage>.csv``."""
    model.test_predictions = None
    if "dataloaders" not in test_options:
        test_options["datamodule"] = datamodule
    trainer.test(model, verbose=False, **test_options)
    stop_if_signalled(trainer)
    samples = datamodule.datasets[split].samples
    metrics = {
        f"{stage}/{k.split('/', 1)[1]}": v
        for k, v in to_floats(trainer.callback_metrics).items()
        if k.startswith("test/")
    }
    return metrics | report_predictions(trainer, model, samples, output_dir, stage)


def external_test(
    trainer: L.Trainer,
    model: XRayClassifier,
    datamodule: RadiographyDataModule,
    output_dir: str | os.PathLike,
) -> dict[str, float]:
    """Test on an external set (``datamodule``'s test split): its metrics as ``external/...``,
    its confusion matrix, reliability diagram and ``predictions_external.csv``."""
    metrics = test_as(trainer, model, "external", datamodule, "test", output_dir)
    matrix = model.confusion_matrices.get("test")
    if trainer.is_global_zero and matrix is not None:
        stem = RunFolder(Path(output_dir)).confusion_matrix("external")
        write_confusion_matrix(stem, matrix, model.class_names)
    return metrics


def out_of_fold(
    trainer: L.Trainer,
    model: XRayClassifier,
    datamodule: RadiographyDataModule,
    ckpt_path: str | None,
    output_dir: str | os.PathLike,
) -> dict[str, float]:
    """A cross-validation fold: the best checkpoint scored on its validation fold, as ``oof/...``
    metrics (with the fold's image counts, for the corrected interval over folds) and the
    out-of-fold predictions ``predictions_oof.csv``."""
    loader = datamodule.val_dataloader()
    metrics = test_as(
        trainer,
        model,
        "oof",
        datamodule,
        "val",
        output_dir,
        dataloaders=loader,
        ckpt_path=ckpt_path,
    )
    metrics["oof/images"] = float(len(datamodule.datasets["val"]))
    metrics["oof/train_images"] = float(len(datamodule.datasets["train"]))
    return metrics


def _same(a: float, b: float) -> bool:
    """Equal to rounding, or both undefined."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)


def compare_with_training_run(
    metrics: Mapping[str, float], ckpt_path: str | os.PathLike, strict: bool
) -> None:
    """Say whether the test numbers equal those the training run recorded (``strict``: raise)."""
    recorded_path = RunFolder.of_checkpoint(ckpt_path).metrics
    if not recorded_path.is_file():
        return
    recorded = json.loads(recorded_path.read_text())
    keys = sorted(k for k in recorded if k.startswith("test/") and k in metrics)
    differ = [k for k in keys if not _same(recorded[k], metrics[k])]
    if not differ:
        log.info("Test metrics equal the training run's (%s).", recorded_path)
        return
    message = "; ".join(f"{k}: run {recorded[k]:.6f}, now {metrics[k]:.6f}" for k in differ)
    if strict:
        raise ConfigError(f"strict=true: test metrics differ from {recorded_path}: {message}")
    log.warning(
        "Test metrics differ from %s (other data or checkpoint?): %s", recorded_path, message
    )
