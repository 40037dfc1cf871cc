"""``covidxr-weights``: list, download, import and check the registry's pretrained weights."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from covidxr.models.backbone import resnet50_trunk
from covidxr.utils.env import weights_dir
from covidxr.weights.adapters import load_weights_file
from covidxr.weights.local import PREFIX, find_spec, local_specs
from covidxr.weights.registry import REGISTRY, WeightsError, downloadable_keys
from covidxr.weights.store import (
    cached_path,
    fetch,
    import_file,
    install_local,
    read_lock,
    verify_cached,
)


def list_weights(console: Console) -> int:
    lock = read_lock()
    table = Table(title=f"ResNet50 starting weights (cache: {weights_dir()})")
    table.add_column("key", no_wrap=True)  # what users type: never cut
    for column in ("name", "in study", "source", "licence", "download", "cached"):
        table.add_column(column)
    for spec in (*REGISTRY.values(), *local_specs()):
        if spec.key.startswith(PREFIX):
            download, state = "covidxr-pretrain", "[green]yes[/green]"
        elif spec.file_name is None:
            download, state = "no file" if not spec.loads_file else "backbone.path", "-"
        else:
            download = "auto" if spec.downloadable else "manual"
            cached = cached_path(spec).is_file()
            state = "[green]yes[/green]" if cached and spec.key in lock else "no"
            if cached and spec.key not in lock:
                state = "yes (unrecorded)"
        study = "yes" if spec.in_study else ""
        table.add_row(spec.key, spec.paper_name, study, spec.source, spec.licence, download, state)
    console.print(table)
    return 0


def verify(key: str, file: Path | None, console: Console) -> int:
    """Load the file with the key's adapter into a ResNet50 trunk; every tensor must fit."""
    spec = find_spec(key)
    if not spec.loads_file:
        raise WeightsError(f"backbone={key} loads no file: there is nothing to verify.")
    if file is None and spec.requires_path:
        raise WeightsError(f"backbone={key} has no cached file: pass --file.")
    path = (
        file if file is not None else verify_cached(spec) if cached_path(spec).is_file() else None
    )
    if path is None:
        raise WeightsError(
            f"{key} is not in the cache ({cached_path(spec)}). Run `covidxr-weights fetch {key}`, "
            f"or pass --file. {spec.instructions()}"
        )
    trunk = resnet50_trunk()
    load_weights_file(trunk, spec.format, path)
    console.print(
        f"[green]OK[/green] {key}: all {len(trunk.state_dict())} ResNet50 backbone tensors "
        f"loaded from {path}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-weights", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every key, its source and whether it is cached")
    p_fetch = sub.add_parser("fetch", help="download into the cache (checks the published hash)")
    p_fetch.add_argument("key", help="a key from `list`, or `all`")
    p_fetch.add_argument("--force", action="store_true", help="download again")
    p_verify = sub.add_parser("verify", help="load with the key's adapter; exit 1 if it fails")
    p_verify.add_argument("key")
    p_verify.add_argument("--file", type=Path, default=None, help="a file instead of the cache")
    p_import = sub.add_parser("import", help="copy a manually downloaded file into the cache")
    p_import.add_argument("key")
    p_import.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    console, errors = Console(), Console(stderr=True)
    try:
        if args.command == "list":
            return list_weights(console)
        if args.command == "verify":
            return verify(args.key, args.file, console)
        if args.command == "import" and args.key.startswith(PREFIX):
            # a trunk covidxr-pretrain made elsewhere, its passport beside it
            path = install_local(args.key.removeprefix(PREFIX), args.file)
            console.print(f"Imported {args.file} as {args.key}: {path}", highlight=False)
            return 0
        if args.command == "import":
            spec = find_spec(args.key)
            if spec.file_name is None:
                raise WeightsError(f"backbone={args.key} has no cache entry to import into.")
            # refuse files that do not fit
            load_weights_file(resnet50_trunk(), spec.format, args.file)
            path = import_file(args.key, args.file)
            console.print(f"Imported {args.file} as {args.key}: {path}", highlight=False)
            return 0
        keys = downloadable_keys() if args.key == "all" else [args.key]
        failed = 0
        for key in keys:
            try:
                path = fetch(key, force=args.force)
                console.print(f"[green]OK[/green] {key}: {path}", highlight=False, soft_wrap=True)
            except WeightsError as exc:
                failed += 1
                errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1 if failed else 0
    except WeightsError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
