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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import scipy.stats

from covidxr.paths import FAILED_FILE, METRICS_FILE, PREDICTIONS_FILE
from covidxr.reporting.paired import (
    PAIRED_COLUMNS,
    PairedResult,
    Record,
    compare_records,
    holm,
    over_seeds,
    read_record,
    verdict,
)
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

    @property
    def fold(self) -> int | None:
        """The validation fold of a cross-validation job (``data.folds`` set), else None."""
        data = self.config.get("data") or {}
        return data.get("fold") if data.get("folds") else None

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


IGNORED_KEYS = ("seed", "hydra.", "data.ci_seed", "model.ci_seed", "data.fold=")


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


def defined(values: Iterable[float | None]) -> list[float]:
    """Percentages of the runs where a metric is defined (an undefined one, NaN, is no 0)."""
    return [100 * v for v in values if v is not None and not math.isnan(v)]


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
            values = defined(j.metrics.get(f"{stage}/{metric}") for j in done)
            mean, low, high = percent_interval(*mean_interval(values))
            if len(done) == 1 and f"{stage}/{metric}_ci_low" in done[0].metrics:
                low = 100 * done[0].metrics[f"{stage}/{metric}_ci_low"]
                high = 100 * done[0].metrics[f"{stage}/{metric}_ci_high"]
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = (
                statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
            external = defined(j.metrics.get(f"external/{metric}") for j in done)
            row[f"external_{metric}_mean"] = statistics.fmean(external) if external else math.nan
            row[f"paper_{metric}"] = PAPER_RESULTS.get(backbone, {}).get(metric, math.nan)
        row |= cross_validation(done)
        rows.append(row)
    return rows


def percent_interval(mean: float, low: float, high: float) -> tuple[float, float, float]:
    """A t-interval of a percentage clipped to 0..100 (it knows no metric's bounds); NaN kept."""
    return mean, max(low, 0.0), min(high, 100.0)


def corrected_interval(
    values: Sequence[float], test_size: float, train_size: float
) -> tuple[float, float, float]:
    """Mean over folds and the Nadeau-Bengio corrected resampled t-interval (95%): the variance
    over folds scaled by 1/K + n_val/n_train, because folds share their training images."""
    mean = statistics.fmean(values) if values else math.nan
    if len(values) < 2 or train_size <= 0:
        return mean, math.nan, math.nan
    variance = (1 / len(values) + test_size / train_size) * statistics.variance(values)
    half = float(scipy.stats.t.ppf(0.975, len(values) - 1)) * math.sqrt(variance)
    return mean, mean - half, mean + half


def cross_validation(jobs: Sequence[Job]) -> dict[str, object]:
    """``cv_<metric>_mean/_ci_low/_ci_high`` (%) over the folds of a setting, per seed pooled."""
    folds = [j for j in jobs if j.metrics and "oof/images" in j.metrics]
    row: dict[str, object] = {"cv_folds": len(folds)}
    for metric in REPORT_METRICS:
        values = defined(j.metrics.get(f"oof/{metric}") for j in folds)
        test = statistics.fmean(j.metrics["oof/images"] for j in folds) if folds else 0.0
        train = statistics.fmean(j.metrics["oof/train_images"] for j in folds) if folds else 0.0
        mean, low, high = percent_interval(*corrected_interval(values, test, train))
        row[f"cv_{metric}_mean"], row[f"cv_{metric}_ci_low"], row[f"cv_{metric}_ci_high"] = (
            mean,
            low,
            high,
        )
    return row


def table_header(columns: Sequence[str]) -> list[str]:
    """A markdown table's first two lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def cv_markdown(rows: Sequence[Mapping]) -> list[str]:
    folded = [r for r in rows if int(r.get("cv_folds", 0) or 0) > 1]
    if not folded:
        return []
    lines = [
        "## Cross-validation (out-of-fold validation, %)",
        "",
        "Mean over folds [95% Nadeau-Bengio corrected resampled t-interval: the variance over "
        "folds times 1/K + n_val/n_train]. The test split is the same for every fold.",
        "",
        *table_header(["setting", "folds", *REPORT_METRICS]),
    ]
    for r in folded:
        cells = []
        for m in REPORT_METRICS:
            mean, low, high = (float(r[f"cv_{m}_{k}"]) for k in ("mean", "ci_low", "ci_high"))
            cells.append("–" if math.isnan(mean) else f"{mean:.2f} [{low:.1f}, {high:.1f}]")
        lines.append(f"| {r['setting']} | {r['cv_folds']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


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


PAIRED_METRICS = ("auroc", "acc")


def _records(jobs: Sequence[Job], stage: str) -> dict[str, dict[object, Record]]:
    """Each setting's prediction records by seed (runs that wrote ``predictions_<stage>.csv``)."""
    keys = varied_keys(jobs)
    found: dict[str, dict[object, Record]] = {}
    for job in jobs:
        path = job.path / PREDICTIONS_FILE.format(stage=stage)
        if job.metrics is not None and path.is_file():
            label = job.seed if job.fold is None else f"{job.seed}/fold{job.fold}"
            found.setdefault(setting_of(job, keys), {})[label] = read_record(path)
    return found


def _paired_row(a: str, b: str, metric: str, result: PairedResult, seeds: str) -> dict:
    return {
        "setting_a": a,
        "setting_b": b,
        "metric": metric,
        "test": result.test,
        "n_images": result.n_images,
        "difference": result.difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "p_value": result.p_value,
        "p_holm": math.nan,
        "verdict": "",
        "seeds": seeds,
    }


def paired_tests(jobs: Sequence[Job], rows: Sequence[Mapping], stage: str = "test") -> list[dict]:
    """Every setting against the best one (per metric), image by image on shared test images.

    One row per seed both ran on the same images (DeLong for AUROC, exact McNemar for
    accuracy); with two or more such seeds, a combined row (paired t over seeds). Holm adjusts
    the p-values of each family: the settings compared with the best, per metric and per seed
    (or combined). Verdicts read the adjusted p.
    """
    records = _records(jobs, stage)
    out: list[dict] = []
    for metric in PAIRED_METRICS:
        ranked = [
            r
            for r in rows
            if str(r["setting"]) in records and not math.isnan(float(r[f"{metric}_mean"]))
        ]
        if len(ranked) < 2:
            continue
        best = str(max(ranked, key=lambda r: float(r[f"{metric}_mean"]))["setting"])
        families: dict[str, list[dict]] = {}
        for row in ranked:
            other = str(row["setting"])
            if other == best:
                continue
            shared = sorted((seed for seed in records[best] if seed in records[other]), key=str)
            shared = [s for s in shared if records[best][s].paths == records[other][s].paths]
            results = [
                (s, compare_records(records[best][s], records[other][s], metric)) for s in shared
            ]
            for seed, result in results:
                families.setdefault(f"seed {seed}", []).append(
                    _paired_row(best, other, metric, result, str(seed))
                )
            if len(results) > 1:
                combined = over_seeds([r.difference for _, r in results])
                combined = PairedResult(
                    combined.test,
                    results[0][1].n_images,
                    combined.difference,
                    combined.ci_low,
                    combined.ci_high,
                    combined.p_value,
                )
                seeds = " ".join(str(s) for s, _ in results)
                families.setdefault("combined", []).append(
                    _paired_row(best, other, metric, combined, seeds)
                )
        for family in families.values():
            for row, adjusted in zip(family, holm([r["p_value"] for r in family]), strict=True):
                row["p_holm"] = adjusted
                row["verdict"] = verdict(row["difference"], adjusted)
            out.extend(family)
    return out


def paired_markdown(tests: Sequence[Mapping], stage: str) -> list[str]:
    if not tests:
        return []
    lines = [
        f"## Paired tests on shared {stage} images (against the best setting)",
        "",
        "AUROC: DeLong; accuracy: exact McNemar; per seed on the images both runs scored, and "
        "combined over seeds (paired t). p_holm: Holm-adjusted over the settings compared. "
        "Differences are a - b in the metric's units (0-1).",
        "",
        "| a | b | metric | test | seeds | images | a - b | 95% interval | p | p_holm | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def number(value: float, fmt: str) -> str:
        return "n/a" if math.isnan(value) else format(value, fmt)

    for t in tests:
        interval = f"[{number(t['ci_low'], '+.4f')}, {number(t['ci_high'], '+.4f')}]"
        lines.append(
            f"| {t['setting_a']} | {t['setting_b']} | {t['metric']} | {t['test']} | "
            f"{t['seeds']} | {t['n_images']} | {number(t['difference'], '+.4f')} | {interval} | "
            f"{number(t['p_value'], '.4g')} | {number(t['p_holm'], '.4g')} | {t['verdict']} |"
        )
    return [*lines, ""]


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


def report_markdown(
    rows: list[dict], jobs: Sequence[Job], stage: str, tests: Sequence[Mapping] = ()
) -> str:
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
        *table_header(header),
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
    lines += cv_markdown(rows)
    lines += paired_markdown([t for t in tests if t.get("stage", stage) == stage], stage)
    lines += paired_markdown([t for t in tests if t.get("stage") == "external"], "external")
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
            # a bootstrap interval need not hold the point estimate: clip, never a negative bar
            below = [
                0
                if math.isnan(r[f"{metric}_ci_low"])
                else max(0.0, r[f"{metric}_mean"] - r[f"{metric}_ci_low"])
                for r in rows
            ]
            above = [
                0
                if math.isnan(r[f"{metric}_ci_high"])
                else max(0.0, r[f"{metric}_ci_high"] - r[f"{metric}_mean"])
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
    folders: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    stage: str = "test",
    wandb: bool = False,
) -> list[dict]:
    """Write ``report.md``, ``report.csv``, ``report.png`` and ``paired_tests.csv`` for the jobs
    in ``folders``; ``wandb``: also as a W&B run in the jobs' group."""
    jobs = find_jobs(folders)
    if not jobs:
        raise MissingFileError(
            f"No run folders (with .hydra/config.yaml) under {list(map(str, folders))}."
        )
    rows = summarize(jobs, stage)
    tests = [t | {"stage": stage} for t in paired_tests(jobs, rows, stage)]
    external_rows = [
        {**r, **{f"{m}_mean": r[f"external_{m}_mean"] for m in PAIRED_METRICS}} for r in rows
    ]
    tests += [t | {"stage": "external"} for t in paired_tests(jobs, external_rows, "external")]
    output = Path(output)
    with atomic_write(output / "report.md") as fh:
        fh.write(report_markdown(rows, jobs, stage, tests))
    if tests:
        with atomic_write(output / "paired_tests.csv") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*PAIRED_COLUMNS, "stage"])
            writer.writeheader()
            writer.writerows(tests)
    with atomic_write(output / "report.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_report(rows, output / "report.png")
    if wandb:
        from covidxr.reporting.wandb_plots import log_report

        settings = (jobs[0].config.get("logger") or {}).get("wandb") or {}
        log_report(rows, tests, output, settings.get("group"), settings.get("project", "covidxr"))
    return rows
