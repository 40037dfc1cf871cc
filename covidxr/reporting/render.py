"""The comparison as a reader sees it: ``report.md`` (tables of settings, cross-validation, paired
tests, the shortcut check, failed jobs) and ``report.png`` (bars with their intervals)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from covidxr.models.metrics import METRIC_NAMES
from covidxr.reporting.jobs import Job
from covidxr.reporting.paired_runs import paired_difference
from covidxr.reporting.shortcut import shortcut_check
from covidxr.utils.figures import saved_figure
from covidxr.weights.registry import PAPER_METRICS


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
        *table_header(["setting", "folds", *METRIC_NAMES]),
    ]
    for r in folded:
        cells = []
        for m in METRIC_NAMES:
            mean, low, high = (float(r[f"cv_{m}_{k}"]) for k in ("mean", "ci_low", "ci_high"))
            cells.append("–" if math.isnan(mean) else f"{mean:.2f} [{low:.1f}, {high:.1f}]")
        lines.append(f"| {r['setting']} | {r['cv_folds']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


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
        for m in METRIC_NAMES
    }
    header = ["setting", "runs", *METRIC_NAMES, *[f"paper {m}" for m in PAPER_METRICS]]
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
        cells = [_cell(r, m, r[f"{m}_mean"] == best[m]) for m in METRIC_NAMES]
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
