"""``covidxr-data``: inspect a dataset folder before training on it.

covidxr-data summary data/          # layout, images per class
covidxr-data verify data/           # decode everything, list unreadable files
covidxr-data audit data/ --split-file logs/train/runs/<run>/split.csv --sheet pairs.png
covidxr-data audit /data --manifest labels.csv --split-file split.csv --group-by patient
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from covidxr.data.formats.decode import find_unreadable
from covidxr.data.formats.layout import DatasetLayout, find_layout
from covidxr.data.formats.manifest import read_manifest
from covidxr.data.splitting.audit import DEFAULT_THRESHOLD, audit, contact_sheet, write_pairs
from covidxr.utils.errors import ConfigError, DatasetError, MissingFileError


def summary(layout: DatasetLayout, console: Console) -> int:
    """Print the resolved folder, its layout and the images per class."""
    console.print(f"Dataset: {layout.root}\nLayout:  {layout.layout}", highlight=False)
    table = Table()
    table.add_column("class")
    table.add_column("folder")
    table.add_column("images", justify="right")
    for name, folder in layout.classes.items():
        table.add_row(
            name, str(folder.image_dir.relative_to(layout.root)), f"{len(folder.files):,}"
        )
    table.add_row("total", "", f"{sum(layout.counts().values()):,}", style="bold")
    console.print(table)
    return 0


def verify(layout: DatasetLayout, console: Console, workers: int | None = None) -> int:
    """Decode every image; list each unreadable one with its reason. Exit code 1 if any."""
    files = layout.files
    bad = find_unreadable(files, workers, console)
    for path, reason in bad:
        console.print(f"[red]unreadable[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    verdict = "[red]FAILED[/red]" if bad else "[green]OK[/green]"
    console.print(f"{verdict}: {len(files) - len(bad):,} of {len(files):,} images decode.")
    return 1 if bad else 0


def audit_command(args: argparse.Namespace, console: Console) -> int:
    """Print the near-duplicate summary; exit 1 when a split leaks copies across its parts or
    a copy is filed under two classes, 2 when files could not be decoded."""
    started = time.perf_counter()
    result = audit(
        args.root, args.against, args.split_file, args.threshold, args.manifest, args.group_by
    )
    table = Table(title=f"Near-duplicates (pHash distance <= {args.threshold} of 64 bits)")
    table.add_column("check")
    table.add_column("images", justify="right")
    table.add_column("pairs", justify="right")
    table.add_row("within the dataset", f"{result.images:,}", f"{len(result.within):,}")
    if args.split_file is not None:
        kinds = sorted({kind for *_, kind in result.leaks})
        detail = ", ".join(f"{k}: {sum(1 for *_, x in result.leaks if x == k)}" for k in kinds)
        style = "bold red" if result.leaks else "green"
        table.add_row(
            f"across splits ({detail or 'none'})", "", f"{len(result.leaks):,}", style=style
        )
    if args.split_file is not None and args.group_by:
        table.add_row(
            f"{args.group_by} groups in several splits",
            "",
            f"{len(result.straddling):,}",
            style="bold red" if result.straddling else "green",
        )
    if args.against is not None:
        table.add_row(
            f"against {args.against}", f"{result.other_images:,}", f"{len(result.against):,}"
        )
    console.print(table)
    if args.output is not None:
        console.print(f"Pairs: {write_pairs(result.all_pairs, args.output)}", highlight=False)
    if args.sheet is not None:
        console.print(
            f"Contact sheet: {contact_sheet(result.all_pairs, args.sheet)}", highlight=False
        )
    console.print(f"{time.perf_counter() - started:.1f} s", highlight=False)
    for a, b, distance in result.conflicts:
        console.print(
            f"[red]label conflict[/red] {a} and {b} (distance {distance}) are copies filed "
            "under two classes: keep the right one.",
            highlight=False,
            soft_wrap=True,
        )
    for path, reason in result.unreadable:
        console.print(f"[red]unreadable[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    if result.leaks:
        console.print(
            f"[red]{len(result.leaks)} near-duplicate pair(s) straddle the splits of "
            f"{args.split_file}[/red]: test numbers count images the model trained on. Split "
            "with data.dedup=group (the default) to keep copies together.",
            highlight=False,
        )
    if result.straddling:
        shown = ", ".join(f"{group} ({splits})" for group, splits in result.straddling[:10])
        console.print(
            f"[red]{len(result.straddling)} {args.group_by} group(s) have images in several "
            f"splits[/red] (pseudonyms: {shown}): split with data.group_by={args.group_by}.",
            highlight=False,
            soft_wrap=True,
        )
    if result.unreadable:
        console.print(
            f"[red]{len(result.unreadable)} file(s) could not be decoded and were not "
            "audited[/red]: replace them (`covidxr-data verify` lists them too).",
            highlight=False,
        )
        return 2
    return 1 if result.leaks or result.conflicts or result.straddling else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_summary = sub.add_parser("summary", help="layout found and images per class")
    p_summary.add_argument("root", type=Path, help="dataset folder or a folder above it")
    p_verify = sub.add_parser("verify", help="decode every image, list unreadable ones")
    p_verify.add_argument("root", type=Path, help="dataset folder or a folder above it")
    p_verify.add_argument("--workers", type=int, default=None, help="decoding threads")
    p_audit = sub.add_parser("audit", help="near-duplicate images: within, across splits, against")
    p_audit.add_argument("root", type=Path, help="dataset folder or a folder above it")
    p_audit.add_argument("--against", type=Path, default=None, help="another dataset (any layout)")
    p_audit.add_argument("--split-file", type=Path, default=None, help="a run's split.csv")
    p_audit.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="bits (2)")
    p_audit.add_argument("--output", type=Path, default=None, help="pairs CSV to write")
    p_audit.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG to write")
    p_audit.add_argument(
        "--group-by",
        default=None,
        help="with --split-file: report groups in several splits, by a manifest column "
        "(patient) or DICOM keyword (PatientID)",
    )
    for command in (p_summary, p_verify, p_audit):
        command.add_argument(
            "--manifest",
            type=Path,
            default=None,
            help="a label CSV (path,label,...) listing the images under root",
        )
    args = parser.parse_args(argv)
    console = Console()
    try:
        if args.command == "audit":
            return audit_command(args, console)
        layout = (
            read_manifest(args.manifest, args.root)
            if args.manifest is not None
            else find_layout(args.root)
        )
    except (DatasetError, ConfigError, MissingFileError) as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    if args.command == "summary":
        return summary(layout, console)
    return verify(layout, console, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
