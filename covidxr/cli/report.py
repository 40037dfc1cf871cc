"""``covidxr-report``: compare runs the way the study's table does, offline.

covidxr-report logs/paper/multiruns/2026-11-27_10-00-00_ab12cd
covidxr-report runA runB --output reports/ --stage val
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from covidxr.reporting.compare import write_report
from covidxr.reporting.jobs import find_jobs
from covidxr.reporting.paired_runs import paired_difference
from covidxr.run_folder import ReportFolder
from covidxr.utils.errors import DatasetError


def _cell(row: dict, metric: str) -> str:
    mean, low = row[f"{metric}_mean"], row[f"{metric}_ci_low"]
    if math.isnan(mean):
        return "–"
    text = f"{mean:.1f}" + (f" ± {row[f'{metric}_std']:.1f}" if row["runs"] > 1 else "")
    return text + ("" if math.isnan(low) else f" [{low:.1f}, {row[f'{metric}_ci_high']:.1f}]")


SHOWN = ("acc", "sensitivity", "specificity", "auroc")


def _prevalence(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1 (e.g. 0.05)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-report", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="multirun or run folders")
    parser.add_argument("--output", type=Path, default=None, help="default: the first folder")
    parser.add_argument("--stage", choices=("test", "val"), default="test")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="two settings (as the table names them): their paired difference over shared seeds",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the tables, p-values and verdicts as a W&B run in the sweep's group",
    )
    parser.add_argument(
        "--prevalence",
        type=_prevalence,
        default=None,
        help="the share of positives where the model would be used (e.g. 0.05): the page's PPV, "
        "NPV and decision curve (the database's own ~26%% COVID is no clinical prevalence)",
    )
    args = parser.parse_args(argv)
    output = args.output or args.folders[0]
    try:
        rows = write_report(args.folders, output, args.stage, args.wandb, args.prevalence)
    except (FileNotFoundError, DatasetError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    table = Table(title=f"{args.stage} metrics, % (mean ± std over seeds, [95% interval])")
    for column in ("setting", "runs", *SHOWN, "study acc"):
        if column == "setting":
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right")
    for row in rows:
        runs = f"{row['runs']}" + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = [_cell(row, m) for m in SHOWN]
        paper = "–" if math.isnan(row["paper_acc"]) else f"{row['paper_acc']:.2f}"
        table.add_row(str(row["setting"]), runs, *cells, paper)
    console = Console()
    console.print(table)
    if args.compare:
        a, b = args.compare
        diff = paired_difference(find_jobs(args.folders), a, b, "acc", args.stage)
        if diff["pairs"] == 0:
            console.print(f"{a} and {b} share no seed: nothing to pair.", highlight=False)
        else:
            console.print(
                f"acc({a}) - acc({b}) = {diff['mean']:+.2f} points over {diff['pairs']} seed(s), "
                f"95% interval [{diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}]",
                highlight=False,
            )
    tests_file = ReportFolder(output).paired_tests
    if tests_file.is_file():
        paired = Table(title="Paired tests against the best setting (Holm-adjusted)")
        for column in ("a", "b", "metric", "seeds", "a - b", "p_holm", "verdict"):
            paired.add_column(column, overflow="fold")
        with tests_file.open(newline="") as fh:
            for t in csv.DictReader(fh):
                paired.add_row(
                    t["setting_a"],
                    t["setting_b"],
                    f"{t['metric']} ({t['stage']})",
                    t["seeds"],
                    f"{float(t['difference']):+.4f}",
                    f"{float(t['p_holm']):.3g}",
                    t["verdict"],
                )
        console.print(paired)
    written = "report.html, report.json, report.md, report.csv, report.png" + (
        ", paired_tests.csv" if tests_file.is_file() else ""
    )
    console.print(f"Wrote {written} to {output}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
