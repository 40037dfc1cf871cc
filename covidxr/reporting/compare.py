"""Comparing runs: one row per setting a sweep varied, with intervals, paired differences, the
study's numbers, and the shortcut check.

Rows are keyed by every override that differs between the jobs except the seed (read from each
job's ``.hydra/overrides.yaml``), so ``finetune=full,linear_probe seed=1,2`` gives two rows of two
runs. Powers ``covidxr-report`` and ``notebooks/compare_runs.ipynb``; the study's numbers come from
the weights registry.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import scipy.stats

from covidxr.paths import FAILED_FILE, METRICS_FILE
from covidxr.utils.errors import MissingFileError
from covidxr.utils.figures import saved_figure
from covidxr.utils.io import atomic_write
from covidxr.weights.registry import PAPER_METRICS, REGISTRY

#: The study's validation results (%), keyed by backbone key, from the registry.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    spec.key: dict(spec.paper_results) for spec in REGISTRY.values() if spec.paper_results
}
REPORT_METRICS = ("acc", "precision", "sensitivity", "specificity", "f1", "auroc")


@dataclass
class Job:
    """One run folder: its composed config, overrides, and metrics or error."""

    path: Path
    config: dict
    overrides: list[str]
    metrics: dict[str, float] | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed" if self.error else "incomplete"

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def backbone(self) -> str:
        backbone = self.config.get("backbone") or {}
        key = backbone.get("key", "unknown")
        if key == "file" and backbone.get("path"):
            key = f"file:{Path(str(backbone['path'])).name}"
        return key

    def override(self, key: str) -> str | None:
        for item in self.overrides:
            name, _, value = item.lstrip("+~").partition("=")
            if name == key:
                return value
        return None


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
            job = Job(run, config, [str(o) for o in overrides or []])
            if (run / METRICS_FILE).is_file():
                job.metrics = json.loads((run / METRICS_FILE).read_text())
            elif (run / FAILED_FILE).is_file():
                job.error = json.loads((run / FAILED_FILE).read_text()).get("error", "failed")
            jobs.append(job)
    return jobs


IGNORED_KEYS = ("seed", "hydra.", "data.ci_seed", "model.ci_seed")


def varied_keys(jobs: Sequence[Job]) -> list[str]:
    """Overrides whose value differs between the jobs, the seed and Hydra's own excepted."""
    keys = sorted(
        {
            item.lstrip("+~").partition("=")[0]
            for job in jobs
            for item in job.overrides
            if not item.lstrip("+~").startswith(IGNORED_KEYS)
        }
    )
    return [k for k in keys if len({job.override(k) for job in jobs}) > 1]


def setting_of(job: Job, keys: Sequence[str]) -> str:
    """The row a job belongs to: its values of the varied overrides (its backbone if none)."""
    if not keys:
        return job.backbone
    return " ".join(f"{k}={job.override(k)}" for k in keys if job.override(k) is not None)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval (nan bounds for fewer than two values)."""
    mean = statistics.fmean(values) if values else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    t = float(scipy.stats.t.ppf(0.975, len(values) - 1))
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


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
        for metric in REPORT_METRICS:
            values = [
                100 * j.metrics[f"{stage}/{metric}"]
                for j in done
                if f"{stage}/{metric}" in j.metrics
            ]
            mean, low, high = mean_interval(values)
            if len(done) == 1 and f"{stage}/{metric}_ci_low" in done[0].metrics:
                low = 100 * done[0].metrics[f"{stage}/{metric}_ci_low"]
                high = 100 * done[0].metrics[f"{stage}/{metric}_ci_high"]
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = (
                statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
            external = [
                100 * j.metrics[f"external/{metric}"]
                for j in done
                if f"external/{metric}" in j.metrics
            ]
            row[f"external_{metric}_mean"] = statistics.fmean(external) if external else math.nan
            row[f"paper_{metric}"] = PAPER_RESULTS.get(backbone, {}).get(metric, math.nan)
        rows.append(row)
    return rows


def paired_difference(
    jobs: Sequence[Job], setting_a: str, setting_b: str, metric: str = "acc", stage: str = "test"
) -> dict[str, float]:
    """``a - b`` (%) over the seeds both settings ran: mean, 95% t-interval, number of pairs."""
    keys = varied_keys(jobs)

    def by_seed(setting: str) -> dict:
        return {
            j.seed: 100 * j.metrics[f"{stage}/{metric}"]
            for j in jobs
            if setting_of(j, keys) == setting and j.metrics and f"{stage}/{metric}" in j.metrics
        }

    a, b = by_seed(setting_a), by_seed(setting_b)
    diffs = [a[seed] - b[seed] for seed in sorted(set(a) & set(b), key=str)]
    mean, low, high = mean_interval(diffs)
    return {"mean": mean, "ci_low": low, "ci_high": high, "pairs": len(diffs)}


def shortcut_check(rows: Sequence[Mapping], jobs: Sequence[Job]) -> list[str]:
    """Markdown lines comparing each setting with lungs visible and hidden (``data.occlude``)."""
    keys = varied_keys(jobs)
    if "data.occlude" not in keys:
        return []
    lines = [
        "## Shortcut check",
        "",
        "The same recipe with the lungs visible (`data.occlude=none`) and hidden. AUROC kept = "
        "(hidden - 50) / (visible - 50): the share of the above-chance signal that needs no lungs.",
        "",
        "| setting | occlude | acc | auroc | AUROC kept | reading |",
        "|---|---|---|---|---|---|",
    ]

    def base(setting: str) -> str:
        return " ".join(p for p in setting.split() if not p.startswith("data.occlude="))

    visible = {base(str(r["setting"])): r for r in rows if "data.occlude=none" in str(r["setting"])}
    for row in rows:
        setting = str(row["setting"])
        if "data.occlude=none" in setting or "data.occlude=" not in setting:
            continue
        reference = visible.get(base(setting))
        if reference is None:
            continue
        above = float(reference["auroc_mean"]) - 50
        kept = (float(row["auroc_mean"]) - 50) / above if above > 0 else math.nan
        if math.isnan(kept):
            reading = "no signal with the lungs visible either"
        elif kept >= 0.8:
            reading = "**most of the score needs no lungs: a shortcut (source, markers, borders)**"
        elif kept >= 0.4:
            reading = "part of the score needs no lungs"
        else:
            reading = "the score depends on the lungs"
        occlude = setting.split("data.occlude=")[1].split()[0]
        for r, label in ((reference, "none"), (row, occlude)):
            lines.append(
                f"| {base(setting) or '-'} | {label} | {float(r['acc_mean']):.1f} | "
                f"{float(r['auroc_mean']):.1f} | {'' if r is reference else f'{kept:.0%}'} | "
                f"{'' if r is reference else reading} |"
            )
    return [*lines, ""]


def _cell(row: Mapping, metric: str, bold: bool) -> str:
    mean = float(row[f"{metric}_mean"])
    if math.isnan(mean):
        return "–"
    low, high = float(row[f"{metric}_ci_low"]), float(row[f"{metric}_ci_high"])
    text = f"{mean:.2f}"
    if int(row["runs"]) > 1:
        text += f" ± {float(row[f'{metric}_std']):.2f}"
    if not math.isnan(low):
        text += f" [{low:.1f}, {high:.1f}]"
    return f"**{text}**" if bold else text


def report_markdown(rows: list[dict], jobs: Sequence[Job], stage: str) -> str:
    best = {
        m: max((r[f"{m}_mean"] for r in rows if not math.isnan(r[f"{m}_mean"])), default=None)
        for m in REPORT_METRICS
    }
    header = ["setting", "runs", *REPORT_METRICS, *[f"paper {m}" for m in PAPER_METRICS]]
    lines = [
        f"# covidxr comparison ({stage} split, %)",
        "",
        "Each cell: mean (± std over seeds) [95% interval: over test images for one run, of the "
        "mean over seeds for several].",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        runs = f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        cells = [_cell(r, m, r[f"{m}_mean"] == best[m]) for m in REPORT_METRICS]
        paper = [
            "–" if math.isnan(r[f"paper_{m}"]) else f"{r[f'paper_{m}']:.2f}" for m in PAPER_METRICS
        ]
        lines.append("| " + " | ".join([str(r["setting"]), runs, *cells, *paper]) + " |")
    lines += [
        "",
        "Best mean per column in bold. 'paper' columns: the study's validation results (no "
        "separate test set, no seed), for reference.",
        "",
    ]
    if any(not math.isnan(r["external_acc_mean"]) for r in rows):
        lines += [
            "## Internal vs external test",
            "",
            "| setting | internal acc | external acc | internal auroc | external auroc |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['setting']} | {r['acc_mean']:.2f} | {r['external_acc_mean']:.2f} | "
                f"{r['auroc_mean']:.2f} | {r['external_auroc_mean']:.2f} |"
            )
        lines.append("")
    ranked = [r for r in rows if not math.isnan(r["acc_mean"])]
    if len(ranked) > 1:
        top = max(ranked, key=lambda r: r["acc_mean"])
        pairs = [
            (r, paired_difference(jobs, str(top["setting"]), str(r["setting"]), "acc", stage))
            for r in ranked
            if r is not top
        ]
        pairs = [(r, d) for r, d in pairs if d["pairs"] >= 2]
        if pairs:
            lines += [
                f"## Is `{top['setting']}` better? (paired over shared seeds, accuracy)",
                "",
                "| against | seeds | difference | 95% interval | verdict |",
                "|---|---|---|---|---|",
            ]
            for r, d in pairs:
                verdict = "better" if d["ci_low"] > 0 else "not shown to differ"
                lines.append(
                    f"| {r['setting']} | {d['pairs']} | {d['mean']:+.2f} | "
                    f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | {verdict} |"
                )
            lines.append("")
    lines += shortcut_check(rows, jobs)
    failed = [j for j in jobs if j.status != "ok"]
    if failed:
        lines += ["## Jobs without results", ""]
        for j in failed:
            reason = j.error or "no metrics.json (still running, or killed)"
            lines.append(f"- `{j.path}` ({j.backbone}, seed {j.seed}): {j.status}: {reason}")
    return "\n".join(lines) + "\n"


def plot_report(
    rows: list[dict],
    path: Path,
    metrics: Sequence[str] = ("acc", "sensitivity", "specificity", "f1"),
) -> None:
    """Bars with their 95% intervals, the study's accuracy as markers."""
    width = 0.8 / len(metrics)
    figsize = (max(6, 1.3 * len(rows) + 2), 4.8)
    with saved_figure(path, figsize=figsize, dpi=120) as ax:
        for k, metric in enumerate(metrics):
            xs = [i + k * width for i in range(len(rows))]
            means = [r[f"{metric}_mean"] for r in rows]
            below = [
                0
                if math.isnan(r[f"{metric}_ci_low"])
                else r[f"{metric}_mean"] - r[f"{metric}_ci_low"]
                for r in rows
            ]
            above = [
                0
                if math.isnan(r[f"{metric}_ci_high"])
                else r[f"{metric}_ci_high"] - r[f"{metric}_mean"]
                for r in rows
            ]
            ax.bar(xs, means, width, yerr=[below, above], capsize=3, label=metric)
        ax.scatter(
            list(range(len(rows))),
            [r["paper_acc"] for r in rows],
            marker="_",
            s=300,
            color="black",
            label="study acc",
            zorder=3,
        )
        ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(rows))])
        ax.set_xticklabels([str(r["setting"]) for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("%")
        ax.set_ylim(0, 105)
        ax.legend(ncol=len(metrics) + 1, fontsize=8, loc="lower right")
        ax.set_title("Test metrics per setting, with 95% intervals")


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
