"""Datasets shipped as images plus a label CSV (RSNA, BIMCV, MIDRC, CheXpert, MIMIC-CXR style).

``data=manifest data.manifest=labels.csv data.root=<images>``: the CSV has a ``path`` column
(relative to ``data.root``, default the CSV's folder) and a ``label`` column, and any others
(``patient``, ``site``, ``view``; a fixed ``split`` of train/val/test). It becomes the same
``DatasetLayout`` a class-folder dataset does, so everything downstream reads both alike; the
other columns are kept per image for ``data.group_by``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from pathlib import Path

from covidxr.data.formats.classes import KNOWN_CLASSES, normalize_class_name
from covidxr.data.formats.layout import ClassFolder, DatasetLayout, natural_key
from covidxr.utils.errors import DatasetError

log = logging.getLogger(__name__)
PATH_COLUMN, LABEL_COLUMN, SPLIT_COLUMN = "path", "label", "split"


def _relative(value: str, root: Path, where: str) -> str:
    """``value`` relative to ``root``; absolute or ``../`` paths alike, refused when they lie
    outside it (every path a run records is relative to its ``data.root``)."""
    if not value:
        return value
    inside = Path(os.path.normpath(root.absolute() / value))  # an absolute value replaces root
    for path, base in (
        (inside, Path(os.path.normpath(root.absolute()))),
        (inside.resolve(), root.resolve()),
    ):
        if path.is_relative_to(base):  # as written, else through symbolic links
            return path.relative_to(base).as_posix()
    raise DatasetError(
        f"{where}: {value} lies outside data.root={root}: give paths inside it, or set "
        "data.root to a folder that holds every image."
    )


def read_manifest(
    manifest: str | os.PathLike, root: str | os.PathLike | None = None
) -> DatasetLayout:
    """The images a label CSV lists, by class, with their other columns; every problem named
    with the CSV's line."""
    manifest = Path(manifest).expanduser()
    if not manifest.is_file():
        raise DatasetError(
            f"data.manifest={manifest} does not exist: give a CSV with columns path,label."
        )
    root = Path(root).expanduser() if root is not None else manifest.parent
    if not root.is_dir():
        raise DatasetError(
            f"data.root={root} is not a folder: point it at the folder the paths in "
            f"{manifest.name} are relative to."
        )
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or ()]
        lowered = {f.lower(): f for f in fields}
        missing = [c for c in (PATH_COLUMN, LABEL_COLUMN) if c not in lowered]
        if missing:
            raise DatasetError(
                f"{manifest} has no column(s) {missing} (found {fields}): a manifest needs "
                "path,label and may have more (patient, site, split)."
            )
        reader.fieldnames = fields
        rows = list(enumerate(reader, start=2))
    by_class: dict[str, list[str]] = {}
    columns: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    unknown: Counter[str] = Counter()
    for line, row in rows:
        path = _relative((row.get(lowered[PATH_COLUMN]) or "").strip(), root, f"{manifest}:{line}")
        label = (row.get(lowered[LABEL_COLUMN]) or "").strip()
        if not path or not label:
            raise DatasetError(f"{manifest}:{line}: empty path or label; fill or remove the row.")
        if path in first_line:
            raise DatasetError(
                f"{manifest}:{line}: {path} is listed again (first on line {first_line[path]})."
            )
        first_line[path] = line
        name = normalize_class_name(label)
        if name not in KNOWN_CLASSES:
            unknown[label] += 1
            continue
        by_class.setdefault(name, []).append(path)
        columns[path] = {
            k.lower(): (v or "").strip()
            for k, v in row.items()
            if k is not None and k.lower() not in (PATH_COLUMN, LABEL_COLUMN)
        }
        split = columns[path].get(SPLIT_COLUMN)
        if split is not None and split not in ("train", "val", "test"):
            raise DatasetError(
                f"{manifest}:{line}: split {split!r}; use train, val or test (or drop the column)."
            )
    if unknown:
        log.warning(
            "%s: %d row(s) with labels %s left out: not one of %s",
            manifest,
            sum(unknown.values()),
            sorted(unknown),
            list(KNOWN_CLASSES),
        )
    absent = [p for paths in by_class.values() for p in paths if not (root / p).is_file()]
    if absent:
        raise DatasetError(
            f"{len(absent)} file(s) listed in {manifest} are not under {root}, e.g. {absent[:3]}. "
            "Point data.root at the folder the paths are relative to."
        )
    classes = {
        name: ClassFolder(
            name,
            root,
            root,
            "manifest",
            tuple(root / p for p in sorted(paths, key=natural_key)),
        )
        for name, paths in by_class.items()
    }
    return DatasetLayout(root=root, classes=classes, columns=columns)
