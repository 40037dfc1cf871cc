"""Near-duplicate images: perceptual hashes, close pairs, and the groups a split keeps together.

Public COVID collections hold many copies of the same X-ray (re-encoded, resized, cropped). A
random split puts copies on both sides of train/test and inflates the test score. Each image is
reduced to a 64-bit perceptual hash (pHash, ``imagehash``) of its decoded grey pixels, as training
sees them; two images whose hashes differ in at most ``threshold`` bits are a near-duplicate pair.
Hashes are cached beside the data (or in ``~/.cache/covidxr/hashes`` when that folder is
read-only), keyed by path, size and modification time, so a second audit costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import PIL.Image

from covidxr.data.formats.decode import UnreadableImageError, read_gray
from covidxr.data.formats.layout import DatasetLayout, find_layout
from covidxr.data.formats.manifest import read_manifest
from covidxr.data.splitting.groups import (
    SOURCE,
    connected_groups,
    group_secret,
    group_values,
    pseudonym,
)
from covidxr.data.splitting.splits import read_split_rows
from covidxr.utils.errors import DatasetError
from covidxr.utils.figures import saved_figure
from covidxr.utils.io import atomic_write

log = logging.getLogger(__name__)
CACHE_NAME = ".covidxr-phash.json"
HASH_VERSION = 1  # bump when the hash changes: old caches are ignored
#: pHash distance (bits of 64) at or below which two images are near-duplicates. On the real
#: database, pairs at 0-2 were the same X-ray (re-saved, re-scaled), pairs at 4 other patients.
DEFAULT_THRESHOLD = 2


def phash(path: Path) -> int:
    """The 64-bit pHash of the decoded grey image."""
    return int(str(imagehash.phash(PIL.Image.fromarray(read_gray(path)))), 16)


def _cache_file(root: Path) -> Path:
    beside = root / CACHE_NAME
    if os.access(root, os.W_OK):
        return beside
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return Path("~/.cache/covidxr/hashes").expanduser() / f"{digest}.json"


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_cache(cache_path: Path) -> dict:
    """The cached hashes, or none when the file is missing, stale or damaged (rebuilt then)."""
    if not cache_path.is_file():
        return {}
    try:
        loaded = json.loads(cache_path.read_text())
        if loaded.get("version") == HASH_VERSION and isinstance(loaded.get("hashes"), dict):
            return loaded["hashes"]
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("Hash cache %s is damaged (%s): rebuilding it", cache_path, exc)
    return {}


def perceptual_hashes(
    root: Path,
    relative_paths: Sequence[str],
    workers: int | None = None,
    unreadable: list[tuple[str, str]] | None = None,
) -> dict[str, int]:
    """pHash of each file under ``root``, cached on disk. Unreadable files are left out and, with
    ``unreadable``, appended to it as ``(relative path, reason)``."""
    root = Path(root)
    cache_path = _cache_file(root)
    cache = _read_cache(cache_path)
    hashes: dict[str, int] = {}
    todo = []
    for rel in relative_paths:
        entry = cache.get(rel)
        if entry is not None and (root / rel).is_file() and entry[:2] == _stamp(root / rel):
            hashes[rel] = int(entry[2], 16)
        else:
            todo.append(rel)
    if todo:

        def compute(rel: str) -> tuple[str, int | str]:
            try:
                return rel, phash(root / rel)
            except UnreadableImageError as exc:
                return rel, exc.reason

        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for rel, value in pool.map(compute, todo):
                if isinstance(value, str):
                    if unreadable is not None:
                        unreadable.append((rel, value))
                    continue
                hashes[rel] = value
                cache[rel] = [*_stamp(root / rel), f"{value:016x}"]
        try:
            with atomic_write(cache_path) as fh:
                json.dump({"version": HASH_VERSION, "hashes": cache}, fh)
        except OSError as exc:  # a cache that cannot be written costs time, not correctness
            log.warning("Could not write the hash cache %s: %s", cache_path, exc)
    log.info(
        "Hashed %d images (%d from the cache)", len(relative_paths), len(relative_paths) - len(todo)
    )
    return hashes


def close_pairs(
    a: np.ndarray, b: np.ndarray | None = None, threshold: int = DEFAULT_THRESHOLD
) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for hashes ``a[i]``, ``b[j]`` at most ``threshold`` bits apart.

    Without ``b``: pairs within ``a`` (i < j). Brute force in blocks with NumPy's popcount:
    the 21,165 images of the database are 224 million comparisons, about a second.
    """
    a = np.asarray(a, dtype=np.uint64)
    within = b is None
    b = a if within else np.asarray(b, dtype=np.uint64)
    pairs = []
    block = max(1, 4_000_000 // max(1, len(b)))
    for start in range(0, len(a), block):
        distances = np.bitwise_count(a[start : start + block, None] ^ b[None, :])
        rows, cols = np.nonzero(distances <= threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if not within or i < c:
                pairs.append((i, c, int(distances[r, c])))
    return pairs


@dataclass(frozen=True)
class DuplicateGroups:
    """Near-duplicate groups among the images of one run."""

    group_of: dict[str, str]  # relative path -> its group's representative (first) path
    pairs: list[tuple[str, str, int]]

    @property
    def duplicated(self) -> int:
        """How many images share their group with another."""
        sizes: dict[str, int] = {}
        for representative in self.group_of.values():
            sizes[representative] = sizes.get(representative, 0) + 1
        return sum(n for n in sizes.values() if n > 1)


def find_duplicate_groups(
    root: Path, relative_paths: Sequence[str], threshold: int = DEFAULT_THRESHOLD
) -> DuplicateGroups:
    """Group ``relative_paths`` (in their given order) by near-duplicate links."""
    hashes = perceptual_hashes(root, relative_paths)
    hashed = [p for p in relative_paths if p in hashes]
    found = close_pairs(np.array([hashes[p] for p in hashed], dtype=np.uint64), threshold=threshold)
    groups = connected_groups(len(hashed), found)
    group_of = {p: p for p in relative_paths}
    group_of.update({p: hashed[g] for p, g in zip(hashed, groups, strict=True)})
    return DuplicateGroups(group_of, [(hashed[i], hashed[j], d) for i, j, d in found])


@dataclass
class AuditResult:
    """What ``covidxr-data audit`` found; paths are absolute."""

    images: int
    within: list[tuple[str, str, int]]  # near-duplicate pairs inside the dataset
    leaks: list[tuple[str, str, int, str]]  # pairs across splits: (a, b, distance, "train~test")
    against: list[tuple[str, str, int]]  # pairs between the dataset and another one
    other_images: int = 0
    #: near-duplicate pairs filed under different classes: the same X-ray with two labels
    conflicts: list[tuple[str, str, int]] = field(default_factory=list)
    #: ``(path, reason)`` of files that could not be decoded (not hashed, so not audited)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: groups (patients, sites; pseudonymised) with images in more than one split
    straddling: list[tuple[str, str]] = field(default_factory=list)

    @property
    def all_pairs(self) -> list[tuple[str, str, int]]:
        return sorted([*self.within, *self.against], key=lambda p: (p[2], p[0], p[1]))


def _files(layout: DatasetLayout) -> dict[str, str]:
    """Each image's class, keyed by its path relative to the dataset folder."""
    return {
        layout.relative(f): name for name, folder in layout.classes.items() for f in folder.files
    }


def straddling_groups(
    layout: DatasetLayout, split_of: dict[str, str], key: str
) -> list[tuple[str, str]]:
    """``(group, "train~test")`` for each ``key`` value (a patient) found in several splits; the
    group is its pseudonym, never the value."""
    values = group_values(layout, list(split_of), key)
    splits: dict[str, set[str]] = {}
    for path, split in split_of.items():
        if values.get(path):
            splits.setdefault(values[path], set()).add(split)
    secret = b"" if key == SOURCE else group_secret(layout.root)
    return sorted(
        (pseudonym(value, key, secret), "~".join(sorted(found)))
        for value, found in splits.items()
        if len(found) > 1
    )


def _split_of(split_file: Path, base: Path, rels: Iterable[str]) -> dict[str, str]:
    """Each image's split in ``split_file``, which must describe this dataset."""
    split_of = {row.path: row.split for row in read_split_rows(split_file, "--split-file")}
    known = set(rels)
    foreign = [p for p in split_of if p not in known]
    if foreign:
        raise DatasetError(
            f"{len(foreign)} of {len(split_of)} images in {split_file} are not images of {base}, "
            f"e.g. {foreign[:3]}: give the split.csv of a run on this dataset."
        )
    return split_of


def audit(
    root: Path,
    against: Path | None = None,
    split_file: Path | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    manifest: Path | None = None,
    group_by: str | None = None,
) -> AuditResult:
    """Near-duplicates within ``root``, across the splits of ``split_file``, with ``against``;
    copies filed under two classes; files that could not be decoded; with ``group_by``, groups
    (patients) on both sides of the split."""
    layout = read_manifest(manifest, root) if manifest is not None else find_layout(root)
    base, class_of = layout.root, _files(layout)
    split_of = _split_of(split_file, base, class_of) if split_file is not None else {}
    straddling = straddling_groups(layout, split_of, group_by) if group_by and split_of else []
    unreadable: list[tuple[str, str]] = []
    hashes = perceptual_hashes(base, list(class_of), unreadable=unreadable)
    rels = [r for r in class_of if r in hashes]
    values = np.array([hashes[r] for r in rels], dtype=np.uint64)
    found = close_pairs(values, None, threshold)
    within = [(str(base / rels[i]), str(base / rels[j]), d) for i, j, d in found]
    conflicts = [
        (str(base / rels[i]), str(base / rels[j]), d)
        for i, j, d in found
        if class_of[rels[i]] != class_of[rels[j]]
    ]
    leaks = []
    if split_file is not None:
        for a, b, d in within:
            sa = split_of.get(Path(a).relative_to(base).as_posix())
            sb = split_of.get(Path(b).relative_to(base).as_posix())
            if sa and sb and sa != sb:
                leaks.append((a, b, d, "~".join(sorted((sa, sb)))))
    crossed, other_images = [], 0
    if against is not None:
        other = find_layout(against)
        other_base, other_classes = other.root, _files(other)
        other_hashes = perceptual_hashes(other_base, list(other_classes))
        other_rels = [r for r in other_classes if r in other_hashes]
        other_values = np.array([other_hashes[r] for r in other_rels], dtype=np.uint64)
        other_images = len(other_rels)
        crossed = [
            (str(base / rels[i]), str(other_base / other_rels[j]), d)
            for i, j, d in close_pairs(values, other_values, threshold)
        ]
    unreadable = sorted((str(base / p), reason) for p, reason in unreadable)
    return AuditResult(
        len(rels), within, leaks, crossed, other_images, conflicts, unreadable, straddling
    )


def write_pairs(pairs: Sequence[tuple[str, str, int]], path: Path) -> Path:
    """``path_a,path_b,distance`` rows, closest first."""
    import csv

    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_a", "path_b", "distance"])
        writer.writerows(sorted(pairs, key=lambda p: (p[2], p[0], p[1])))
    return Path(path)


def contact_sheet(pairs: Sequence[tuple[str, str, int]], path: Path, most: int = 16) -> Path:
    """The ``most`` closest pairs side by side, so a person can judge them."""
    shown = sorted(pairs, key=lambda p: p[2])[:most] or [("", "", 0)]
    with saved_figure(
        path, len(shown), 2, figsize=(5, 2.6 * len(shown)), dpi=90, squeeze=False
    ) as axes:
        for row, (a, b, distance) in zip(axes, shown, strict=True):
            for ax, image_path in zip(row, (a, b), strict=True):
                ax.axis("off")
                if image_path:
                    ax.imshow(read_gray(Path(image_path)), cmap="gray")
                    ax.set_title(
                        f"{Path(image_path).parent.parent.name}/{Path(image_path).name}", fontsize=7
                    )
            row[0].text(
                -0.05, 0.5, f"d={distance}", transform=row[0].transAxes, rotation=90, va="center"
            )
    return Path(path)
