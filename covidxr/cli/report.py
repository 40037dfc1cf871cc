"""``covidxr-report``: compare runs the way the study's table does, offline.

covidxr-report logs/paper/multiruns/2026-11-27_10-00-00_ab12cd
covidxr-report runA runB --output reports/ --stage val
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from covidxr.reporting.compare import write_report

SHOWN = ("acc", "sensitivity", "specificity", "auroc")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-report", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="multirun or run folders")
    parser.add_argument("--output", type=Path, default=None, help="default: the first folder")
    parser.add_argument("--stage", choices=("test", "val"), default="test")
    args = parser.parse_args(argv)
    output = args.output or args.folders[0]
    try:
        rows = write_report(args.folders, output, args.stage)
    except FileNotFoundError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    table = Table(title=f"{args.stage} metrics, % (mean ± std over seeds)")
    for column in ("backbone", "runs", *SHOWN, "paper acc"):
        table.add_column(column, justify="left" if column == "backbone" else "right")
    for row in rows:
        runs = f"{row['runs']}" + (f" ({row['failed']} failed)" if row["failed"] else "")
        cells = [f"{row[f'{m}_mean']:.1f} ± {row[f'{m}_std']:.1f}" for m in SHOWN]
        paper = "–" if math.isnan(row["paper_acc"]) else f"{row['paper_acc']:.2f}"
        table.add_row(row["backbone"], runs, *cells, paper)
    console = Console()
    console.print(table)
    console.print(f"Wrote {output / 'report.md'}, report.csv and report.png", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
