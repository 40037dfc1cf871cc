"""What one run reports: ``metrics.json``, the confusion matrix, and the printed table.

Shared by ``covidxr-train`` and ``covidxr-eval``.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from covidxr.reporting.intervals import reliability_diagram
from covidxr.utils.io import atomic_write, write_json

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
#: Left in a run folder when its job failed: the error, for sweeps that go on and for reports.
FAILED_FILE = "failed.json"
RELIABILITY_FILE = "reliability_test.png"


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
    output_dir: str | os.PathLike, matrix: torch.Tensor, class_names: Sequence[str], stem: str
) -> tuple[Path, Path]:
    """``<stem>.csv`` (rows: true class, columns: predicted) and a ``<stem>.png`` heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    counts = matrix.long().tolist()
    csv_path = output_dir / f"{stem}.csv"
    with atomic_write(csv_path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["true \\ predicted", *class_names])
        writer.writerows([name, *row] for name, row in zip(class_names, counts, strict=True))
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * n, 1.2 + 1.1 * n), dpi=120)
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
    ax.set_title(stem.replace("_", " "))
    fig.tight_layout()
    png_path = output_dir / f"{stem}.png"
    fig.savefig(png_path)
    plt.close(fig)
    return csv_path, png_path


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.4f}"


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
            cells.append("" if low is None else f"[{low:.4f}, {high:.4f}]")
        table.add_row(name, *cells)
    return table


def print_metrics(metrics: Mapping[str, float], output_dir: str | os.PathLike) -> None:
    console = Console()
    console.print(metrics_table(metrics, "Metrics"))
    console.print(f"Run directory: {output_dir}", highlight=False, soft_wrap=True)


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
        predictions = getattr(model, "test_predictions", None) if test else None
        if predictions is not None:
            probs, targets = (t.double().numpy() for t in predictions)
            reliability_diagram(probs, targets.astype(int), output_dir / RELIABILITY_FILE)
        print_metrics(metrics, output_dir)
    return metrics


def external_test(
    trainer: L.Trainer, model: L.LightningModule, datamodule, output_dir: str | os.PathLike
) -> dict[str, float]:
    """Test on an external set (``datamodule``'s test split): its metrics as ``external/...``,
    its confusion matrix, reliability diagram and a CSV of every prediction."""
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = {
        f"external/{k.split('/', 1)[1]}": v
        for k, v in to_floats(trainer.callback_metrics).items()
        if k.startswith("test/")
    }
    if trainer.is_global_zero:
        output_dir = Path(output_dir)
        matrix = model.confusion_matrices.get("test")
        if matrix is not None:
            write_confusion_matrix(
                output_dir, matrix, model.class_names, "confusion_matrix_external"
            )
        if model.test_predictions is not None:
            probs, targets = (t.double().numpy() for t in model.test_predictions)
            reliability_diagram(probs, targets.astype(int), output_dir / "reliability_external.png")
            dataset = datamodule.datasets["test"]
            with atomic_write(output_dir / "predictions_external.csv") as fh:
                writer = csv.writer(fh)
                writer.writerow(
                    ["path", "true", "predicted", *[f"p_{c}" for c in model.class_names]]
                )
                for sample, row in zip(dataset.samples, probs, strict=True):
                    predicted = model.class_names[int(row.argmax())]
                    writer.writerow(
                        [Path(dataset.root) / sample.path, sample.class_name, predicted,
                         *[f"{p:.6f}" for p in row]]
                    )  # fmt: skip
    return metrics
