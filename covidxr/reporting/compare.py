"""Comparing runs the way the study's table does: from a multirun's or any run folders.

Powers ``covidxr-report`` and ``notebooks/compare_runs.ipynb``; the study's numbers come from the
weights registry.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from covidxr.reporting.run import FAILED_FILE, METRICS_FILE
from covidxr.utils.errors import MissingFileError
from covidxr.utils.io import atomic_write
from covidxr.weights.registry import REGISTRY

#: The study's validation results (%), keyed by backbone key, from the registry.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    spec.key: dict(spec.paper_results) for spec in REGISTRY.values() if spec.paper_results
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
            raise MissingFileError(f"{folder} is not a folder: give a multirun or run folder.")
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
            elif (run / FAILED_FILE).is_file():
                job.error = json.loads((run / FAILED_FILE).read_text()).get("error", "failed")
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
        raise MissingFileError(
            f"No run folders (with .hydra/config.yaml) under {list(map(str, folders))}."
        )
    rows = summarize(jobs, stage)
    output = Path(output)
    with atomic_write(output / "report.md") as fh:
        fh.write(report_markdown(rows, jobs, stage))
    with atomic_write(output / "report.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_report(rows, output / "report.png")
    return rows
