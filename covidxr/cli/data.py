"""``covidxr-data``: inspect a dataset folder before training on it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from covidxr.data.decode import find_unreadable
from covidxr.data.index import DatasetError, DatasetLayout, find_layout


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
    files = [f for folder in layout.classes.values() for f in folder.files]
    bad = find_unreadable(files, workers, console)
    for path, reason in bad:
        console.print(f"[red]unreadable[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    verdict = "[red]FAILED[/red]" if bad else "[green]OK[/green]"
    console.print(f"{verdict}: {len(files) - len(bad):,} of {len(files):,} images decode.")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_summary = sub.add_parser("summary", help="layout found and images per class")
    p_summary.add_argument("root", type=Path, help="dataset folder or a folder above it")
    p_verify = sub.add_parser("verify", help="decode every image, list unreadable ones")
    p_verify.add_argument("root", type=Path, help="dataset folder or a folder above it")
    p_verify.add_argument("--workers", type=int, default=None, help="decoding threads")
    args = parser.parse_args(argv)
    console = Console()
    try:
        layout = find_layout(args.root)
    except DatasetError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    if args.command == "summary":
        return summary(layout, console)
    return verify(layout, console, args.workers)


if __name__ == "__main__":
    raise SystemExit(main())
