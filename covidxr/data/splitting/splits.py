"""Which images a run uses and the split each belongs to; ``split.csv`` written and read back.

Subsets and splits are ordered by a seeded hash of each file's relative path, which keeps them
deterministic across machines and stable when files are added to a class.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from covidxr.data.formats.classes import normalize_class_name
from covidxr.data.formats.layout import IMAGE_SUFFIXES, DatasetLayout, natural_key
from covidxr.utils.errors import DatasetError, MissingFileError
from covidxr.utils.io import atomic_write

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Training images a run leaves unlabeled (``data.train_fraction``): recorded, never trained on.
UNLABELED = "unlabeled"
SPLIT_COLUMNS: tuple[str, ...] = ("path", "label", "class", "split")
#: Written by 0.2 on: the near-duplicate group (its first image's path); optional when read.
GROUP_COLUMN = "group"


def seeded_order(
    items: Iterable[str], seed: int, names: Mapping[str, str] | None = None
) -> list[str]:
    """Order strings by a seeded hash: a reproducible shuffle that is stable under insertions.
    ``names`` replaces an item's name in the hash (a patient's ID, held in memory, for the
    pseudonym a run records, whose key differs between copies of the data)."""
    names = names or {}
    return sorted(
        items, key=lambda s: hashlib.sha1(f"{seed}:{names.get(s, s)}".encode()).hexdigest()
    )


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and class name, and
    its group (near-duplicates, a source; the group's first path; empty when alone)."""

    path: str
    label: int
    class_name: str
    group: str = ""

    @property
    def group_key(self) -> str:
        """The group as ``split.csv`` records it: the image's own path when it is alone."""
        return self.group or self.path


@dataclass
class DatasetIndex:
    """The images of one run, their labels and the split each belongs to."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    #: ``(path, reason)`` of unreadable images left out (``skip_corrupt``)
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def class_counts(self, split: str = "train") -> list[int]:
        counts = Counter(s.label for s in self.splits.get(split, []))
        return [counts.get(i, 0) for i in range(len(self.classes))]

    def describe(self) -> str:
        return ", ".join(f"{name} {len(samples)}" for name, samples in self.splits.items())

    def write_split_csv(self, path: str | os.PathLike) -> Path:
        """Write ``split.csv`` atomically (identical content from every DDP rank is harmless)."""
        with atomic_write(path) as fh:
            writer = csv.writer(fh)
            writer.writerow([*SPLIT_COLUMNS, GROUP_COLUMN])
            for split in (*SPLITS, UNLABELED):
                for s in self.splits.get(split, []):
                    writer.writerow([s.path, s.label, s.class_name, split, s.group_key])
        return Path(path)

    def write_dropped_csv(self, path: str | os.PathLike) -> Path | None:
        """``path,reason`` of every image left out as unreadable; None when there was none."""
        if not self.dropped:
            return None
        with atomic_write(path) as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason"])
            writer.writerows(self.dropped)
        return Path(path)


def select_files(
    layout: DatasetLayout,
    classes: Sequence[str],
    limit_per_class: int | None = None,
    balance: bool = False,
    seed: int = 0,
) -> list[Sample]:
    """Pick the images of ``classes``, optionally a deterministic subset per class."""
    chosen: dict[str, list[str]] = {}
    for name in classes:
        folder = layout.classes.get(name)
        if folder is None:
            found = ", ".join(layout.classes) or "none"
            raise DatasetError(
                f"Class {name!r} is missing from {layout.root} (found: {found}). "
                "Remove it from data.classes or add its folder."
            )
        if not folder.files:
            raise DatasetError(
                f"Class {name!r} has no images in {folder.path} (looked for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}). Add images or remove it from data.classes."
            )
        chosen[name] = [layout.relative(f) for f in folder.files]
    keep = min(len(v) for v in chosen.values()) if balance else None
    if limit_per_class is not None:
        keep = min(keep or limit_per_class, limit_per_class)
    samples = []
    for label, name in enumerate(classes):
        paths = chosen[name]
        if keep is not None and keep < len(paths):
            paths = sorted(seeded_order(paths, seed)[:keep], key=natural_key)
        samples.extend(Sample(p, label, name) for p in paths)
    return samples


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of ``n`` images go to each split; a split with a fraction > 0 gets one if it can."""
    sizes = [round(n * f) for f in fractions[1:]]
    for i, f in enumerate(fractions[1:]):
        if f > 0 and sizes[i] == 0 and n - sum(sizes) > 1:
            sizes[i] = 1
    return [n - sum(sizes), *sizes]


def groups_by_label(
    samples: Sequence[Sample], seed: int, order_names: Mapping[str, str] | None = None
) -> tuple[dict[str, list[Sample]], dict[int, list[str]]]:
    """The samples of each group, and each label's groups in seeded order (``seeded_order`` with
    ``order_names``); a group's label is the most common of its members'."""
    members: dict[str, list[Sample]] = {}
    for s in samples:
        members.setdefault(s.group_key, []).append(s)
    by_label: dict[int, list[str]] = {}
    for group, items in members.items():
        label = Counter(s.label for s in items).most_common(1)[0][0]
        by_label.setdefault(label, []).append(group)
    return members, {
        label: seeded_order(by_label[label], seed, order_names) for label in sorted(by_label)
    }


def stratified_split(
    samples: Sequence[Sample],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    order_names: Mapping[str, str] | None = None,
) -> dict[str, list[Sample]]:
    """Split each class by ``fractions`` (train, val, test) in a seeded, reproducible order.

    Samples of one group (near-duplicates, a patient) land in one split together: groups are
    ordered by a seeded hash of their name, and each goes to the first of train, val, test whose
    quota (of its class) it still fits; one that fits none goes where most of a quota is left,
    so a few large groups never leave val or test empty. A sample without a group is a group of
    its own (alone, the splits are exact prefixes of the seeded order). With ``order_names`` (see
    ``seeded_order``) the split depends on the data and the seed only, not on a pseudonym key.
    """
    members, by_label = groups_by_label(samples, seed, order_names)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for groups in by_label.values():
        total = sum(len(members[g]) for g in groups)
        quotas = split_counts(total, fractions)
        open_splits = [k for k, f in enumerate(fractions) if f > 0]
        filled = [0] * len(SPLITS)
        for group in groups:
            size = len(members[group])
            fits = [k for k in open_splits if filled[k] + size <= quotas[k]]
            k = fits[0] if fits else max(open_splits, key=lambda k: (quotas[k] - filled[k], -k))
            splits[SPLITS[k]].extend(members[group])
            filled[k] += size
    for name in SPLITS:
        sort_samples(splits[name])
    return splits


def labeled_subset(
    pool: Sequence[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """``(labeled, unlabeled)``: per class, whole groups (copies, patients, sites) in a seeded
    order until ``fraction`` of the class's images is reached (at least one group).

    The order depends on the seed and the group names only, so a smaller fraction is a prefix of
    a larger one (the 2% subset lies inside the 5% one), and the subset of a saved split's train
    and unlabeled images is the subset it was made with.
    """
    members, by_label = groups_by_label(pool, seed + LABELED_SALT)
    labeled: list[Sample] = []
    unlabeled: list[Sample] = []
    for groups in by_label.values():
        target = max(1, math.ceil(fraction * sum(len(members[g]) for g in groups) - 1e-9))
        taken = 0
        for group in groups:
            (labeled if taken < target else unlabeled).extend(members[group])
            taken += len(members[group]) if taken < target else 0
    return sort_samples(labeled), sort_samples(unlabeled)


#: Keeps the labeled subset's order apart from the split's order of the same seed.
LABELED_SALT = 7919


def kfold_split(
    pool: Sequence[Sample],
    folds: int,
    fold: int,
    seed: int,
    order_names: Mapping[str, str] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)`` for fold ``fold`` of ``folds``: stratified by class and grouped (a group,
    near-duplicates or a patient, lies in one fold). Groups go, in the seeded order
    ``stratified_split`` uses, to the fold with the fewest images of their class so far."""
    members, by_label = groups_by_label(pool, seed, order_names)
    train: list[Sample] = []
    val: list[Sample] = []
    for groups in by_label.values():
        filled = [0] * folds
        for group in groups:
            target = filled.index(min(filled))
            filled[target] += len(members[group])
            (val if target == fold else train).extend(members[group])
    return sort_samples(train), sort_samples(val)


def sort_samples(samples: list[Sample]) -> list[Sample]:
    """Dataset order: by label, then by path in natural order (in place)."""
    samples.sort(key=lambda s: (s.label, natural_key(s.path)))
    return samples


def read_split_csv(
    path: str | os.PathLike, root: str | os.PathLike, classes: Sequence[str]
) -> dict[str, list[Sample]]:
    """Load a saved split exactly, checking it matches ``classes`` and the files under ``root``."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DatasetError(f"data.split_file {path} does not exist.")
    splits: dict[str, list[Sample]] = {name: [] for name in (*SPLITS, UNLABELED)}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing_cols = set(SPLIT_COLUMNS) - set(reader.fieldnames or ())
        if missing_cols:
            raise DatasetError(
                f"{path} is not a covidxr split file: missing column(s) {sorted(missing_cols)}; "
                f"expected {', '.join(SPLIT_COLUMNS)}."
            )
        for line, row in enumerate(reader, start=2):
            name, split = normalize_class_name(row["class"]), row["split"]
            if split not in splits:
                raise DatasetError(
                    f"{path}:{line}: unknown split {split!r}; use {(*SPLITS, UNLABELED)}."
                )
            if name not in classes or int(row["label"]) != classes.index(name):
                raise DatasetError(
                    f"{path}:{line}: class {row['class']!r} with label {row['label']} does not "
                    f"match data.classes {list(classes)}. Use the classes the split was made with."
                )
            group = row.get(GROUP_COLUMN) or ""
            group = "" if group == row["path"] else group  # alone in its group
            splits[split].append(Sample(row["path"], int(row["label"]), name, group))
    missing = [s.path for v in splits.values() for s in v if not (root / s.path).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} file(s) listed in {path} are not under {root}, e.g. {missing[:3]}. "
            "Point data.root at the dataset the split was made from."
        )
    seen = Counter(s.path for v in splits.values() for s in v)
    twice = [p for p, n in seen.items() if n > 1]
    if twice:
        raise DatasetError(f"{path} lists {len(twice)} image(s) more than once, e.g. {twice[:3]}.")
    return {name: group for name, group in splits.items() if name in SPLITS or group}


@dataclass(frozen=True)
class SplitRow:
    """One line of a ``split.csv``, as the tools that only look a split up read it."""

    path: str  # relative to the run's data root, as split.csv records it
    class_name: str
    split: str


def read_split_rows(path: str | os.PathLike, option: str) -> list[SplitRow]:
    """The rows of a covidxr ``split.csv``; a missing or foreign file is one line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{option}={path} does not exist: give a run's split.csv.")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"path", "class", "split"} <= set(reader.fieldnames or ()):
            raise DatasetError(f"{option}={path} is not a covidxr split.csv (path,class,split).")
        return [SplitRow(r["path"], r["class"], r["split"]) for r in reader]
