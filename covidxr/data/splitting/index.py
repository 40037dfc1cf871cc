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

from covidxr.data.formats.classes import resolve_classes
from covidxr.data.formats.decode import find_unreadable
from covidxr.data.formats.layout import DatasetLayout, find_layout
from covidxr.data.formats.manifest import SPLIT_COLUMN, read_manifest
from covidxr.data.splitting.audit import find_duplicate_groups
from covidxr.data.splitting.groups import (
    SOURCE,
    group_secret,
    group_values,
    held_out,
    held_values,
    merge_groups,
)
from covidxr.data.splitting.spec import SplitSpec
from covidxr.data.splitting.splits import (
    SPLITS,
    UNLABELED,
    DatasetIndex,
    Sample,
    kfold_split,
    labeled_subset,
    read_split_csv,
    select_files,
    sort_samples,
    stratified_split,
)
from covidxr.utils.errors import DatasetError
from covidxr.utils.timing import STOPWATCH

log = logging.getLogger(__name__)


def build_index(root: str | os.PathLike, spec: SplitSpec | None = None) -> DatasetIndex:
    """Find, subset and split the images of one run; or reload a saved split exactly.

    ``spec.verify`` decodes every image of every split once, here, before any training, and names
    every unreadable file at once. ``spec.skip_corrupt`` does the same but drops them (a new split
    is made without them; a saved split keeps its assignments) and records them in ``dropped``.
    """
    spec = spec or SplitSpec()
    layout = load_layout(root, spec)
    if spec.split_file is not None:
        splits = read_split_csv(spec.split_file, layout.root, spec.classes)
        log.info("Reusing the split in %s", spec.split_file)
        samples = [s for split in SPLITS for s in splits[split]]
    else:
        samples = select_files(layout, spec.classes, spec.limit_per_class, spec.balance, spec.seed)
    dropped: list[tuple[str, str]] = []
    if spec.verify or spec.skip_corrupt:
        with STOPWATCH.phase("index/verify"):
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
    order_names: dict[str, str] = {}
    if spec.split_file is not None:
        splits = {name: [s for s in group if s.path not in skip] for name, group in splits.items()}
    else:
        kept = [s for s in samples if s.path not in skip]
        if spec.dedup != "off":
            with STOPWATCH.phase("index/pHash"):
                kept = group_duplicates(layout.root, kept, spec.dedup, spec.dedup_threshold)
        if any(SPLIT_COLUMN in layout.columns.get(s.path, {}) for s in kept):
            splits = manifest_split(layout, kept)
        elif spec.group_key is not None:
            splits, order_names = group_split(layout, kept, spec)
        else:
            splits = stratified_split(kept, spec.split_fractions, spec.seed)
        if spec.folds is not None:
            pool = splits["train"] + splits["val"]
            splits["train"], splits["val"] = kfold_split(
                pool, spec.folds, spec.fold, spec.seed, order_names
            )
    if spec.train_fraction is not None or spec.train_images is not None:
        splits["train"], splits[UNLABELED] = label_subset(splits, spec)
    index = DatasetIndex(root=layout.root, classes=spec.classes, splits=splits, dropped=dropped)
    log.info("Dataset %s (%s layout): %s", layout.root, layout.layout, index.describe())
    return index


def label_subset(splits: dict[str, list[Sample]], spec: SplitSpec) -> tuple[list, list]:
    """The labeled part of the training pool (its train and unlabeled images, so a saved split
    gives back the subset it was made with) for ``data.train_fraction`` or ``train_images``."""
    pool = splits["train"] + splits.get(UNLABELED, [])
    if spec.train_images is not None and spec.train_images > len(pool):
        raise DatasetError(
            f"data.train_images={spec.train_images}: the training split holds {len(pool)} "
            "images; ask for at most that many, or use data.train_fraction."
        )
    fraction = spec.train_fraction or spec.train_images / len(pool)
    labeled, unlabeled = labeled_subset(pool, fraction, spec.seed)
    log.info(
        "Label efficiency: training on %d of %d training images (data.train_%s=%s); validation "
        "and test unchanged",
        len(labeled),
        len(pool),
        "fraction" if spec.train_fraction is not None else "images",
        spec.train_fraction if spec.train_fraction is not None else spec.train_images,
    )
    return labeled, unlabeled


def load_layout(root: str | os.PathLike | None, spec: SplitSpec) -> DatasetLayout:
    """The images under ``root``: listed by ``spec.manifest``, else found in class folders."""
    if spec.manifest is not None:
        return read_manifest(spec.manifest, root)
    if root is None:
        raise DatasetError("data.root is not set: point it at the dataset folder.")
    return find_layout(root)


def manifest_split(layout: DatasetLayout, samples: list[Sample]) -> dict[str, list[Sample]]:
    """The fixed split a manifest's ``split`` column gives (every listed image needs one)."""
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        split = layout.columns[sample.path].get(SPLIT_COLUMN, "")
        if split not in splits:
            raise DatasetError(
                f"The manifest gives {sample.path} no split while others have one: fill its "
                "split column (train, val or test) or drop the column."
            )
        splits[split].append(sample)
    log.info("Using the manifest's split column (data.seed and split_fractions do not apply)")
    return {name: sort_samples(group) for name, group in splits.items()}


def group_split(
    layout: DatasetLayout, samples: list[Sample], spec: SplitSpec
) -> tuple[dict[str, list[Sample]], dict[str, str]]:
    """Splits that keep each group (patient, site, source) on one side; held-out groups, if any,
    form the test split. Also each group's ordering name (in memory; see ``merge_groups``)."""
    key = str(spec.group_key)
    values = group_values(layout, [s.path for s in samples], key)
    secret = b"" if key == SOURCE else group_secret(layout.root)
    samples, order_names = merge_groups(samples, values, key, secret)
    lacking = sum(1 for s in samples if not values.get(s.path))
    if lacking:
        log.warning("%d image(s) have no %s value: each is a group of its own", lacking, key)
    if not spec.held_groups:
        return stratified_split(samples, spec.split_fractions, spec.seed, order_names), order_names
    if key == SOURCE:
        unknown = set(spec.held_groups) - set(values.values())
        if unknown:
            raise DatasetError(
                f"data.test_groups/test_sources: {sorted(unknown)} are not sources of any image "
                f"under {layout.root}; its sources are {sorted(set(values.values()))}."
            )
    test_keys = held_out(samples, values, held_values(spec.held_groups, values, key, secret))
    train, val = spec.split_fractions[:2]
    rest = [s for s in samples if s.group_key not in test_keys]
    fractions = (train / (train + val), val / (train + val), 0.0)
    splits = stratified_split(rest, fractions, spec.seed, order_names)
    splits["test"] = sort_samples([s for s in samples if s.group_key in test_keys])
    return splits, order_names


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
    if not Path(root).expanduser().is_dir():
        raise DatasetError(
            f"external={root} does not exist or is not a folder: give the folder of the other "
            "dataset (one folder per class, any depth below it)."
        )
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
