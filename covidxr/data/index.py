"""One run's images: find them, drop unreadable ones, group copies and sources, split.

``build_index`` puts the pieces together: the layout (``layout.py``), the class names
(``classes.py``), the options (``spec.py``), near-duplicate groups (``audit.py``), source
collections (``sources.py``) and the split itself (``splits.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from covidxr.data.audit import find_duplicate_groups
from covidxr.data.classes import resolve_classes
from covidxr.data.decode import find_unreadable
from covidxr.data.layout import DatasetLayout, find_layout
from covidxr.data.sources import read_sources
from covidxr.data.spec import SplitSpec
from covidxr.data.splits import (
    SPLITS,
    DatasetIndex,
    Sample,
    read_split_csv,
    select_files,
    sort_samples,
    stratified_split,
)
from covidxr.utils.errors import DatasetError

log = logging.getLogger(__name__)


def build_index(root: str | os.PathLike, spec: SplitSpec | None = None) -> DatasetIndex:
    """Find, subset and split the images of one run; or reload a saved split exactly.

    ``spec.verify`` decodes every image of every split once, here, before any training, and names
    every unreadable file at once. ``spec.skip_corrupt`` does the same but drops them (a new split
    is made without them; a saved split keeps its assignments) and records them in ``dropped``.
    """
    spec = spec or SplitSpec()
    layout = find_layout(root)
    if spec.split_file is not None:
        splits = read_split_csv(spec.split_file, layout.root, spec.classes)
        log.info("Reusing the split in %s", spec.split_file)
        samples = [s for split in SPLITS for s in splits[split]]
    else:
        samples = select_files(layout, spec.classes, spec.limit_per_class, spec.balance, spec.seed)
    dropped: list[tuple[str, str]] = []
    if spec.verify or spec.skip_corrupt:
        bad = find_unreadable([layout.root / s.path for s in samples])
        dropped = sorted((layout.relative(p), r) for p, r in bad)
        if dropped and not spec.skip_corrupt:
            listed = "; ".join(f"{path} ({reason})" for path, reason in dropped[:20])
            more = f" and {len(dropped) - 20} more" if len(dropped) > 20 else ""
            raise DatasetError(
                f"{len(dropped)} unreadable image(s) under {layout.root}: {listed}{more}. "
                "Set data.skip_corrupt=true to leave them out (recorded in the run folder), or "
                "replace them."
            )
        for path, reason in dropped:
            log.warning("Skipping unreadable image %s: %s", layout.root / path, reason)
    skip = {p for p, _ in dropped}
    if spec.split_file is not None:
        splits = {name: [s for s in group if s.path not in skip] for name, group in splits.items()}
    else:
        kept = [s for s in samples if s.path not in skip]
        if spec.dedup != "off":
            kept = group_duplicates(layout.root, kept, spec.dedup, spec.dedup_threshold)
        if spec.group_by == "source" or spec.test_sources:
            splits = source_split(layout, kept, spec)
        else:
            splits = stratified_split(kept, spec.split_fractions, spec.seed)
    index = DatasetIndex(root=layout.root, classes=spec.classes, splits=splits, dropped=dropped)
    log.info("Dataset %s (%s layout): %s", layout.root, layout.layout, index.describe())
    return index


def source_split(
    layout: DatasetLayout, samples: list[Sample], spec: SplitSpec
) -> dict[str, list[Sample]]:
    """Splits that respect source collections: grouped by source, and/or sources held out."""
    sources = read_sources(layout, list(spec.classes))
    if spec.group_by == "source":
        samples = [dataclasses.replace(s, group=f"source:{sources[s.path]}") for s in samples]
    if not spec.test_sources:
        return stratified_split(samples, spec.split_fractions, spec.seed)
    unknown = sorted(set(spec.test_sources) - set(sources.values()))
    if unknown:
        raise DatasetError(
            f"data.test_sources: {unknown} are not sources of {layout.root}; its sources are "
            f"{sorted(set(sources.values()))}."
        )
    held = set(spec.test_sources)
    train, val = spec.split_fractions[:2]
    rest = [s for s in samples if sources[s.path] not in held]
    splits = stratified_split(rest, (train / (train + val), val / (train + val), 0.0), spec.seed)
    splits["test"] = sort_samples([s for s in samples if sources[s.path] in held])
    return splits


def group_duplicates(root: Path, samples: list[Sample], mode: str, threshold: int) -> list[Sample]:
    """Samples with their near-duplicate group set (``group``), or one per group (``drop``)."""
    found = find_duplicate_groups(root, [s.path for s in samples], threshold)
    grouped = [
        dataclasses.replace(
            s, group="" if found.group_of[s.path] == s.path else found.group_of[s.path]
        )
        for s in samples
    ]
    if found.pairs:
        log.info(
            "%d near-duplicate pair(s) (pHash distance <= %d): %d images in groups of 2+, %s",
            len(found.pairs),
            threshold,
            found.duplicated,
            "kept together in one split" if mode == "group" else "one kept per group",
        )
    labels: dict[str, set[str]] = {}
    for sample in grouped:
        labels.setdefault(sample.group_key, set()).add(sample.class_name)
    for group, names in labels.items():
        if len(names) > 1:
            members = [s.path for s in grouped if s.group_key == group]
            log.warning(
                "Label conflict: %s are copies of one X-ray filed under %s; they stay in one "
                "split, but one label is wrong (`covidxr-data audit` lists every conflict)",
                members,
                sorted(names),
            )
    if mode == "drop":
        grouped = [s for s in grouped if not s.group]
    return grouped


def external_index(
    root: str | os.PathLike,
    classes: Sequence[str],
    class_map: Mapping[str, str | None] | None = None,
) -> DatasetIndex:
    """Every image of another dataset (any layout) as a test split, labelled by the class names
    it shares with ``classes`` (a model's label order).

    ``class_map`` maps its folder names to the model's classes (``PNEUMONIA: Viral Pneumonia``,
    or null to leave one out). A warning names the folders found, the classes used and what was
    left out, so half a set never vanishes silently.
    """
    class_map = dict(class_map or {})
    layout = find_layout(root, aliases=class_map)
    names = resolve_classes(classes)
    shared = [name for name in names if name in layout.classes]
    folders = sorted(
        p.name for p in layout.root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not shared:
        raise DatasetError(
            f"external={layout.root} holds folders {folders}, none of them one of the model's "
            f"classes {list(names)}. Name them by class, or map them: external_map="
            "{FOLDER: CLASS}."
        )
    used = {layout.classes[name].path.name for name in shared}
    dropped = [f for f in folders if f not in used and class_map.get(f, f) is not None]
    if dropped:
        log.warning(
            "External set %s: folders %s; used %s as %s; left out %s (not classes of the model; "
            "map them with external_map={FOLDER: CLASS}, or null to leave one out quietly)",
            layout.root,
            folders,
            sorted(used),
            shared,
            dropped,
        )
    missing = [name for name in names if name not in shared]
    if missing:
        log.warning(
            "External set %s has no images of %s: their metrics are undefined (n/a)",
            layout.root,
            missing,
        )
    test = [
        Sample(layout.relative(f), names.index(name), name)
        for name in shared
        for f in layout.classes[name].files
    ]
    return DatasetIndex(layout.root, names, {"train": [], "val": [], "test": test})
