"""Find the images of the COVID-19 Radiography Database in any of its release layouts; split them.

The database has shipped in three layouts (docs/study.md):

* ``current``: ``<Class>/images/<Class>-N.png`` beside ``<Class>/masks/`` and ``*.metadata.xlsx``;
* ``flat``:    ``<Class>/<Class>-N.png`` (the release the reference study used);
* ``2020``:    ``COVID-19/``, ``NORMAL/``, ``Viral Pneumonia/`` holding ``NAME (N).png``.

Everything here is pure Python over paths, so it is cheap to test and to run before any image is
decoded. Subsets and splits are ordered by a seeded hash of each file's relative path, which keeps
them deterministic across machines and stable when files are added to a class.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from covidxr.data.audit import DEFAULT_THRESHOLD, find_duplicate_groups
from covidxr.data.decode import find_unreadable
from covidxr.utils.errors import UserError
from covidxr.utils.io import atomic_write

log = logging.getLogger(__name__)

#: The database's four classes, in the canonical label order used when none is given.
KNOWN_CLASSES: tuple[str, ...] = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_COLUMNS: tuple[str, ...] = ("path", "label", "class", "split")
#: Written by 0.2 on: the near-duplicate group (its first image's path); optional when read.
GROUP_COLUMN = "group"
DEDUP_MODES = ("group", "drop", "off")
KAGGLE_HINT = (
    "Download the COVID-19 Radiography Database from Kaggle "
    "(https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database), unpack it into "
    "$COVIDXR_DATA_DIR (default: data/) and point data.root at it, or generate synthetic phantoms "
    "with `covidxr-synth data/synthetic-phantoms`."
)
LAYOUT_HELP = (
    "Expected one of the database's layouts: <Class>/images/*.png (current release), "
    "<Class>/*.png (older release), or COVID-19/, NORMAL/, 'Viral Pneumonia'/ with 'NAME (N).png' "
    "(2020 release); class folders: COVID (or COVID-19), Normal (or NORMAL), Lung_Opacity, "
    "Viral Pneumonia."
)
_NATURAL_CHUNKS = re.compile(r"(\d+)")


class DatasetError(UserError, ValueError):
    """Input data is missing or malformed; the message names the path and the fix."""


def normalize_class_name(name: str) -> str:
    """Map a spelling the releases used (``COVID-19``, ``NORMAL``, ``lung opacity``) to its class.

    Unknown names are returned unchanged so the caller can report them.
    """
    key = re.sub(r"[\s_\-]+", "", name).lower()
    aliases = {
        "covid": "COVID",
        "covid19": "COVID",
        "normal": "Normal",
        "lungopacity": "Lung_Opacity",
        "viralpneumonia": "Viral Pneumonia",
    }
    return aliases.get(key, name)


def natural_key(text: str) -> list[int | str]:
    """Sort key so that ``COVID-2`` comes before ``COVID-10``."""
    return [int(c) if c.isdigit() else c.lower() for c in _NATURAL_CHUNKS.split(text)]


def seeded_order(items: Iterable[str], seed: int) -> list[str]:
    """Order strings by a seeded hash: a reproducible shuffle that is stable under insertions."""
    return sorted(items, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())


@dataclass(frozen=True)
class ClassFolder:
    """One class as found on disk."""

    name: str
    path: Path
    image_dir: Path
    layout: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class DatasetLayout:
    """What a root folder holds: the resolved dataset folder and its class folders."""

    root: Path
    classes: dict[str, ClassFolder]

    @property
    def layout(self) -> str:
        return "+".join(sorted({c.layout for c in self.classes.values()}))

    def counts(self) -> dict[str, int]:
        return {name: len(c.files) for name, c in self.classes.items()}

    @property
    def files(self) -> list[Path]:
        """Every image of every class, class by class."""
        return [f for folder in self.classes.values() for f in folder.files]


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and class name, and
    its near-duplicate group (the group's first path; its own path when it has no copy)."""

    path: str
    label: int
    class_name: str
    group: str = ""


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

    def write_split_csv(self, path: str | os.PathLike) -> Path:
        """Write ``split.csv`` atomically (identical content from every DDP rank is harmless)."""
        with atomic_write(path) as fh:
            writer = csv.writer(fh)
            writer.writerow([*SPLIT_COLUMNS, GROUP_COLUMN])
            for split in SPLITS:
                for s in self.splits.get(split, []):
                    writer.writerow([s.path, s.label, s.class_name, split, s.group or s.path])
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


def _class_folder(path: Path) -> ClassFolder | None:
    """Recognise a class folder and its layout, or return None for anything else."""
    name = normalize_class_name(path.name)
    if name not in KNOWN_CLASSES:
        return None
    images_dir = path / "images"
    if images_dir.is_dir():
        layout, folder = "current", images_dir
    else:
        layout, folder = "flat", path
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
        ]
    files = [folder / n for n in sorted(names, key=natural_key)]
    if layout == "flat" and (path.name != name or any(" (" in f.name for f in files[:5])):
        layout = "2020"
    return ClassFolder(name, path, folder, layout, tuple(files))


def _class_folders(folder: Path) -> dict[str, ClassFolder]:
    found: dict[str, ClassFolder] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        cf = _class_folder(child)
        if cf is not None:
            if cf.name in found:
                raise DatasetError(
                    f"Two folders in {folder} both hold class {cf.name!r}: "
                    f"{found[cf.name].path.name!r} and {child.name!r}. Keep one of them."
                )
            found[cf.name] = cf
    return found


def find_layout(root: str | os.PathLike, max_depth: int = 2) -> DatasetLayout:
    """Resolve ``root`` to the folder holding the class folders.

    ``root`` may be that folder, or a folder above it such as the one the Kaggle archive was
    unpacked into (``archive/COVID-19_Radiography_Dataset/``).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset root {root} does not exist or is not a folder. {KAGGLE_HINT}")
    frontier = [root]
    for _ in range(max_depth + 1):
        hits = [(f, _class_folders(f)) for f in frontier]
        hits = [(f, c) for f, c in hits if c]
        if len(hits) == 1:
            return DatasetLayout(root=hits[0][0], classes=hits[0][1])
        if len(hits) > 1:
            names = ", ".join(str(f) for f, _ in hits)
            raise DatasetError(
                f"Several datasets found under {root}: {names}. Point data.root at one of them."
            )
        frontier = [
            c for f in frontier for c in sorted(f.iterdir()) if c.is_dir() and c.name[0] != "."
        ]
    raise DatasetError(f"No class folders found in {root}. {LAYOUT_HELP} {KAGGLE_HINT}")


def resolve_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Normalise the configured class list; its order is the label order."""
    names = tuple(normalize_class_name(c) for c in classes)
    unknown = [c for c, n in zip(classes, names, strict=True) if n not in KNOWN_CLASSES]
    if unknown:
        raise DatasetError(
            f"Unknown class(es) in data.classes: {unknown}. Choose from {list(KNOWN_CLASSES)}."
        )
    if len(set(names)) != len(names):
        raise DatasetError(f"data.classes lists a class twice: {list(classes)}.")
    if not 2 <= len(names) <= 4:
        raise DatasetError(f"data.classes must name 2 to 4 classes, got {list(classes)}.")
    return names


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
        chosen[name] = [f.relative_to(layout.root).as_posix() for f in folder.files]
    keep = min(len(v) for v in chosen.values()) if balance else None
    if limit_per_class is not None:
        if limit_per_class < 1:
            raise DatasetError(f"data.limit_per_class must be >= 1, got {limit_per_class}.")
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


def stratified_split(
    samples: Sequence[Sample], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[Sample]]:
    """Split each class by ``fractions`` (train, val, test) in a seeded, reproducible order.

    Samples of one group (near-duplicates) land in one split together: groups are ordered by a
    seeded hash of their name and filled into train, then val, then test, by each class's
    quota. A sample without a group is a group of its own.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DatasetError(
            f"data.split_fractions must be three non-negative numbers (train, val, test) summing "
            f"to 1, got {list(fractions)}."
        )
    members: dict[str, list[Sample]] = {}
    for s in samples:
        members.setdefault(s.group or s.path, []).append(s)
    by_label: dict[int, list[str]] = {}
    for group, items in members.items():
        label = Counter(s.label for s in items).most_common(1)[0][0]
        by_label.setdefault(label, []).append(group)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        groups = seeded_order(by_label[label], seed)
        total = sum(len(members[g]) for g in groups)
        bounds = list(itertools.accumulate(split_counts(total, fractions)))
        filled = 0
        for group in groups:
            name = next((n for n, b in zip(SPLITS, bounds, strict=True) if filled < b), SPLITS[0])
            splits[name].extend(members[group])
            filled += len(members[group])
    for name in SPLITS:
        splits[name].sort(key=lambda s: (s.label, natural_key(s.path)))
    return splits


def read_split_csv(
    path: str | os.PathLike, root: str | os.PathLike, classes: Sequence[str]
) -> dict[str, list[Sample]]:
    """Load a saved split exactly, checking it matches ``classes`` and the files under ``root``."""
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise DatasetError(f"data.split_file {path} does not exist.")
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
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
                raise DatasetError(f"{path}:{line}: unknown split {split!r}; use {SPLITS}.")
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
    return splits


def build_index(
    root: str | os.PathLike,
    classes: Sequence[str] = ("COVID", "Normal"),
    limit_per_class: int | None = None,
    balance: bool = False,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    split_file: str | os.PathLike | None = None,
    skip_corrupt: bool = False,
    verify: bool = False,
    dedup: str = "off",
    dedup_threshold: int = DEFAULT_THRESHOLD,
    group_by: str = "none",
    test_sources: Sequence[str] = (),
) -> DatasetIndex:
    """Find, subset and split the images of one run; or reload a saved split exactly.

    ``verify`` decodes every image of every split once, here, before any training, and names
    every unreadable file at once. ``skip_corrupt`` does the same but drops them (a new split is
    made without them; a saved split keeps its assignments) and records them in ``dropped``.

    ``dedup`` (new splits only): ``group`` keeps near-duplicates (pHash distance at most
    ``dedup_threshold``) in one split together, ``drop`` keeps the first image of each group,
    ``off`` splits images independently. ``group_by=source`` keeps each source collection (from
    the release's metadata) in one split; ``test_sources`` holds those sources out as the test
    split and splits the rest into train and val (leave-sources-out).
    """
    if group_by not in ("none", "source"):
        raise DatasetError(f"data.group_by={group_by!r}: choose none or source.")
    if dedup not in DEDUP_MODES:
        raise DatasetError(f"data.dedup={dedup!r}: choose one of {list(DEDUP_MODES)}.")
    names = resolve_classes(classes)
    layout = find_layout(root)
    if split_file is not None:
        splits = read_split_csv(split_file, layout.root, names)
        log.info("Reusing the split in %s (%s)", split_file, _describe(splits))
        samples = [s for split in SPLITS for s in splits[split]]
    else:
        samples = select_files(layout, names, limit_per_class, balance, seed)
    dropped: list[tuple[str, str]] = []
    if verify or skip_corrupt:
        bad = find_unreadable([layout.root / s.path for s in samples])
        dropped = sorted((p.relative_to(layout.root).as_posix(), r) for p, r in bad)
        if dropped and not skip_corrupt:
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
    if split_file is not None:
        splits = {name: [s for s in group if s.path not in skip] for name, group in splits.items()}
    else:
        kept = [s for s in samples if s.path not in skip]
        if dedup != "off":
            kept = group_duplicates(layout.root, kept, dedup, dedup_threshold)
        if group_by == "source" or test_sources:
            splits = source_split(
                layout, names, kept, split_fractions, seed, group_by, test_sources
            )
        else:
            splits = stratified_split(kept, split_fractions, seed)
        log.info("Dataset %s (%s layout): %s", layout.root, layout.layout, _describe(splits))
    return DatasetIndex(root=layout.root, classes=names, splits=splits, dropped=dropped)


def source_split(
    layout: DatasetLayout,
    names: Sequence[str],
    samples: list[Sample],
    fractions: Sequence[float],
    seed: int,
    group_by: str,
    test_sources: Sequence[str],
) -> dict[str, list[Sample]]:
    """Splits that respect source collections: grouped by source, and/or sources held out."""
    from covidxr.data.sources import read_sources

    sources = read_sources(layout, list(names))
    if group_by == "source":
        samples = [dataclasses.replace(s, group=f"source:{sources[s.path]}") for s in samples]
    if not test_sources:
        return stratified_split(samples, fractions, seed)
    unknown = sorted(set(test_sources) - set(sources.values()))
    if unknown:
        raise DatasetError(
            f"data.test_sources: {unknown} are not sources of {layout.root}; its sources are "
            f"{sorted(set(sources.values()))}."
        )
    held = set(test_sources)
    train, val = fractions[0], fractions[1]
    rest = [s for s in samples if sources[s.path] not in held]
    splits = stratified_split(rest, (train / (train + val), val / (train + val), 0.0), seed)
    splits["test"] = sorted(
        (s for s in samples if sources[s.path] in held),
        key=lambda s: (s.label, natural_key(s.path)),
    )
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
    if mode == "drop":
        grouped = [s for s in grouped if not s.group]
    return grouped


def _describe(splits: dict[str, list[Sample]]) -> str:
    return ", ".join(f"{name} {len(samples)}" for name, samples in splits.items())


def external_index(root: str | os.PathLike, classes: Sequence[str]) -> DatasetIndex:
    """Every image of another dataset (any layout) as a test split, labelled by the class names
    it shares with ``classes`` (a model's label order); its other classes are left out."""
    layout = find_layout(root)
    names = resolve_classes(classes)
    shared = [name for name in names if name in layout.classes]
    if not shared:
        raise DatasetError(
            f"external={layout.root} holds classes {list(layout.classes)}, none of the model's "
            f"{list(names)}. Give a dataset with at least one of them (folders named by class)."
        )
    ignored = sorted(set(layout.classes) - set(shared))
    if ignored:
        log.info("External set %s: classes %s are not the model's, left out", layout.root, ignored)
    test = [
        Sample(f.relative_to(layout.root).as_posix(), names.index(name), name)
        for name in shared
        for f in layout.classes[name].files
    ]
    return DatasetIndex(layout.root, names, {"train": [], "val": [], "test": test})
