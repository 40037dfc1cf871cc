"""What runs leave behind and how they compare: ``metrics.json``, confusion matrices, printed
tables, and the study-style comparison of many runs (``covidxr-report``)."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

METRICS_FILE = "metrics.json"


def to_floats(metrics: Mapping[str, object]) -> dict[str, float]:
    """Tensors and numbers to floats, keys sorted; anything else is left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return dict(sorted(out.items()))


def write_json(path: str | os.PathLike, data: Mapping[str, object]) -> Path:
    """Write JSON atomically: a reader never sees half a file, an old file survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


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
    with csv_path.open("w", newline="") as fh:
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


def metrics_table(metrics: Mapping[str, float], title: str) -> Table:
    """val/test metrics side by side, per-class rows last."""
    stages = [s for s in ("val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    names = sorted(
        {k.split("/", 1)[1] for k in metrics if k.split("/", 1)[0] in stages},
        key=lambda name: ("/" in name, name),
    )
    table = Table(title=title)
    table.add_column("metric")
    for stage in stages:
        table.add_column(stage, justify="right")
    for name in names:
        cells = []
        for stage in stages:
            value = metrics.get(f"{stage}/{name}")
            cells.append("" if value is None or math.isnan(value) else f"{value:.4f}")
        table.add_row(name, *cells)
    return table


def print_metrics(metrics: Mapping[str, float], output_dir: str | os.PathLike) -> None:
    console = Console()
    console.print(metrics_table(metrics, "Metrics"))
    console.print(f"Run directory: {output_dir}", highlight=False, soft_wrap=True)


# --- comparing runs: the study's table, from a multirun or run folders ----------------------

#: Validation results reported by the study (PAPER.md), in %, keyed by backbone key.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    key: dict(zip(("acc", "precision", "sensitivity", "f1", "specificity"), values, strict=True))
    for key, values in {
        "chestxray14": (97.66, 97.91, 97.37, 97.64, 97.95),
        "chexpert": (98.49, 98.61, 98.34, 98.48, 98.63),
        "imagenet": (82.24, 83.94, 79.53, 81.68, 84.93),
        "imagenet_chestxray14": (98.21, 99.02, 97.37, 98.19, 99.04),
        "imagenet_chexpert": (96.01, 96.50, 95.44, 95.97, 96.58),
        "inat2021_sup": (95.66, 96.35, 94.88, 95.61, 96.44),
        "inat2021_sup_scratch": (97.04, 96.96, 97.10, 97.03, 96.99),
        "inat2021_mini_swav_1k": (99.17, 99.31, 99.03, 99.17, 99.32),
        "moco_v1": (93.53, 94.11, 92.81, 93.45, 94.25),
        "moco_v2": (81.35, 79.74, 83.82, 81.73, 78.90),
    }.items()
}
REPORT_METRICS = ("acc", "precision", "sensitivity", "specificity", "f1", "auroc")


@dataclass
class Job:
    """One run folder of a sweep: its backbone, seed, overrides, and metrics or error."""

    path: Path
    backbone: str
    seed: int | None
    overrides: list[str]
    metrics: dict[str, float] | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed" if self.error else "incomplete"


def find_jobs(folders: Sequence[str | os.PathLike]) -> list[Job]:
    """Every run folder (one with ``.hydra/config.yaml``) in or under ``folders``."""
    import yaml

    jobs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder: give a multirun or run folder.")
        configs = sorted(
            {*folder.glob(".hydra/config.yaml"), *folder.glob("**/.hydra/config.yaml")}
        )
        for config_path in configs:
            run = config_path.parent.parent
            config = yaml.safe_load(config_path.read_text()) or {}
            overrides_path = run / ".hydra" / "overrides.yaml"
            overrides = (
                yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
            )
            backbone = config.get("backbone") or {}
            key = backbone.get("key", "unknown")
            if key == "file" and backbone.get("path"):
                key = f"file:{Path(str(backbone['path'])).name}"
            job = Job(run, key, config.get("seed"), list(overrides or []))
            if (run / METRICS_FILE).is_file():
                job.metrics = json.loads((run / METRICS_FILE).read_text())
            elif (run / "failed.json").is_file():
                job.error = json.loads((run / "failed.json").read_text()).get("error", "failed")
            jobs.append(job)
    return jobs


def summarize(jobs: Sequence[Job], stage: str = "test") -> list[dict[str, object]]:
    """One row per backbone: mean and std (%) of each metric over its finished jobs."""
    rows = []
    for backbone in sorted({j.backbone for j in jobs}):
        group = [j for j in jobs if j.backbone == backbone]
        done = [j for j in group if j.metrics is not None]
        row: dict[str, object] = {
            "backbone": backbone,
            "runs": len(done),
            "failed": sum(j.status == "failed" for j in group),
            "seeds": " ".join(str(j.seed) for j in done),
        }
        for metric in REPORT_METRICS:
            values = [
                100 * j.metrics[f"{stage}/{metric}"]
                for j in done
                if f"{stage}/{metric}" in j.metrics
            ]
            row[f"{metric}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{metric}_std"] = (
                statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
            )
            row[f"paper_{metric}"] = PAPER_RESULTS.get(backbone, {}).get(metric, math.nan)
        rows.append(row)
    return rows


def _cell(mean: float, std: float, bold: bool) -> str:
    if math.isnan(mean):
        return "–"
    text = f"{mean:.2f} ± {std:.2f}"
    return f"**{text}**" if bold else text


def report_markdown(rows: list[dict], jobs: Sequence[Job], stage: str) -> str:
    best = {
        m: max((r[f"{m}_mean"] for r in rows if not math.isnan(r[f"{m}_mean"])), default=None)
        for m in REPORT_METRICS
    }
    header = ["backbone", "runs", *REPORT_METRICS, *[f"paper {m}" for m in REPORT_METRICS[:5]]]
    lines = [
        f"# covidxr comparison ({stage} split, %, mean ± std over seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        runs = f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        cells = [
            _cell(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_mean"] == best[m]) for m in REPORT_METRICS
        ]
        paper = [
            "–" if math.isnan(r[f"paper_{m}"]) else f"{r[f'paper_{m}']:.2f}"
            for m in REPORT_METRICS[:5]
        ]
        lines.append("| " + " | ".join([str(r["backbone"]), runs, *cells, *paper]) + " |")
    lines += [
        "",
        "Best mean per column in bold. 'paper' columns: the study's validation results (no "
        "separate test set, no seed), for reference.",
    ]
    failed = [j for j in jobs if j.status != "ok"]
    if failed:
        lines += ["", "## Jobs without results", ""]
        for j in failed:
            reason = j.error or "no metrics.json (still running, or killed)"
            lines.append(f"- `{j.path}` ({j.backbone}, seed {j.seed}): {j.status}: {reason}")
    return "\n".join(lines) + "\n"


def plot_report(
    rows: list[dict],
    path: Path,
    metrics: Sequence[str] = ("acc", "sensitivity", "specificity", "f1"),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2), 4.5), dpi=120)
    for k, metric in enumerate(metrics):
        xs = [i + k * width for i in range(len(rows))]
        means = [r[f"{metric}_mean"] for r in rows]
        stds = [r[f"{metric}_std"] for r in rows]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=metric)
    paper = [r["paper_acc"] for r in rows]
    ax.scatter(
        [i for i in range(len(rows))],
        paper,
        marker="_",
        s=300,
        color="black",
        label="paper acc",
        zorder=3,
    )
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(rows))])
    ax.set_xticklabels([r["backbone"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(ncol=len(metrics) + 1, fontsize=8, loc="lower right")
    ax.set_title("Test metrics per backbone (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    folders: Sequence[str | os.PathLike], output: str | os.PathLike, stage: str = "test"
) -> list[dict]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` for the jobs in ``folders``."""
    jobs = find_jobs(folders)
    if not jobs:
        raise FileNotFoundError(
            f"No run folders (with .hydra/config.yaml) under {list(map(str, folders))}."
        )
    rows = summarize(jobs, stage)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text(report_markdown(rows, jobs, stage))
    with (output / "report.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_report(rows, output / "report.png")
    return rows
