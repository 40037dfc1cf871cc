"""Groups that must not straddle a split: patients, sites, scanners, source collections.

``data.group_by`` names where an image's group comes from: a column of the label manifest
(``patient``, ``site``), a DICOM header keyword (``PatientID``, ``InstitutionName``,
``Manufacturer``; read without the pixels), or ``source`` (the Kaggle release's collections). An
image joins the group of its value *and* the near-duplicate group of its copies, so neither a
patient nor a copied X-ray sits on both sides.

Privacy: values are identifiers. They are used in memory only; a group is recorded (``split.csv``,
predictions) as ``<key>:<keyed hash>``, with a key kept beside the data (``.covidxr-key``), never in
the run folder. Source collections are public URLs and stay readable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from covidxr.data.formats.dicom import DicomError, header_value, is_dicom_keyword
from covidxr.data.formats.layout import DatasetLayout
from covidxr.data.formats.sources import read_sources
from covidxr.data.splitting.privacy import PSEUDONYM_DIGITS, raw_entries
from covidxr.data.splitting.splits import Sample
from covidxr.utils.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)
KEY_FILE = ".covidxr-key"
KEY_ENV = "COVIDXR_GROUP_KEY"
SOURCE = "source"


def group_values(layout: DatasetLayout, paths: Sequence[str], key: str) -> dict[str, str]:
    """Each image's value of ``key`` (empty when it has none)."""
    known = {c for row in layout.columns.values() for c in row}
    if key.lower() in known:
        return {p: layout.columns.get(p, {}).get(key.lower(), "") for p in paths}
    if key == SOURCE:
        return read_sources(layout, list(layout.classes))
    if is_dicom_keyword(key):
        return _header_values(layout.root, paths, key)
    listed = sorted(known) or "none beyond path, label"
    where = f"a column of the manifest ({listed}), " if layout.layout == "manifest" else ""
    raise ConfigError(
        f"data.group_by={key}: not {where}a DICOM keyword (PatientID, InstitutionName, "
        "Manufacturer, ...) nor source. Name one of them, or none."
    )


def _header_values(root: Path, paths: Sequence[str], keyword: str) -> dict[str, str]:
    def read(path: str) -> str:
        try:
            return header_value(root / path, keyword)
        except DicomError:
            return ""  # not a DICOM (a PNG beside them): alone in its group

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(paths, pool.map(read, paths), strict=True))


def group_secret(root: Path) -> bytes:
    """The key that pseudonymises this dataset's groups: ``$COVIDXR_GROUP_KEY``, else
    ``<root>/.covidxr-key`` (made on first use), else, for a read-only dataset, one kept in the
    user's cache. The split itself does not depend on the key, only the recorded pseudonyms."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    candidates = [
        root / KEY_FILE,
        Path.home()
        / ".cache"
        / "covidxr"
        / "group-keys"
        / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16],
    ]
    for index, path in enumerate(candidates):
        try:
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "x") as fh:  # another process may make it first: then read it
                    fh.write(secrets.token_hex(32))
            secret = path.read_bytes().strip()
        except FileExistsError:
            secret = path.read_bytes().strip() if path.is_file() else b""
        except OSError:  # a read-only (shared) dataset: the next place
            continue
        if not secret:
            continue
        if index:
            log.warning(
                "%s is read-only: the key that pseudonymises its groups is kept in %s; copy it "
                "there (or set %s) for the same recorded groups on another machine",
                root,
                path,
                KEY_ENV,
            )
        return secret
    raise DatasetError(f"Cannot store a group key for {root}: set {KEY_ENV} to a secret string.")


def pseudonym(value: str, key: str, secret: bytes) -> str:
    """What a run records for a group value: ``<key>:`` and 16 hex digits of an HMAC-SHA256."""
    if key == SOURCE:
        return f"{SOURCE}:{value}"
    return (
        f"{key}:{hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_DIGITS]}"
    )


def connected_groups(count: int, pairs: Iterable[tuple[int, int, int]]) -> list[int]:
    """Group id (the smallest member index) of each of ``count`` items linked by ``pairs``."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        root_i, root_j = find(i), find(j)
        if root_i != root_j:
            parent[max(root_i, root_j)] = min(root_i, root_j)
    return [find(i) for i in range(count)]


def merge_groups(
    samples: Sequence[Sample], values: Mapping[str, str], key: str, secret: bytes
) -> tuple[list[Sample], dict[str, str]]:
    """Samples regrouped so that images sharing a value or a near-duplicate group share one group
    (connected components), named by its smallest value's pseudonym; and each such group's value
    (in memory only: ``stratified_split`` orders groups by it, so the split does not depend on
    the key)."""
    first: dict[str, int] = {}
    links = []
    for i, sample in enumerate(samples):
        for link in (f"v:{values.get(sample.path, '')}", f"g:{sample.group}"):
            if link not in ("v:", "g:"):
                links.append((first.setdefault(link, i), i, 0))
    component = connected_groups(len(samples), links)
    names: dict[int, str] = {}
    for i, sample in enumerate(samples):
        value = values.get(sample.path, "")
        if value:
            names[component[i]] = min(names.get(component[i], value), value)
    grouped, order_names = [], {}
    for i, sample in enumerate(samples):
        value = names.get(component[i])
        if value is not None:
            sample = dataclasses.replace(sample, group=pseudonym(value, key, secret))
            order_names[sample.group] = f"{key}:{value}"
        grouped.append(sample)
    return grouped, order_names


def held_values(
    held: Sequence[str], values: Mapping[str, str], key: str, secret: bytes
) -> set[str]:
    """The group values ``held`` names: each entry a value, a pseudonym (``PatientID:<hex>``, as
    ``split.csv`` shows it) or ``@<file>`` of such entries, one per line (its contents are never
    recorded). An entry that names no image is one error, which never repeats a raw value."""
    by_pseudonym = {pseudonym(v, key, secret): v for v in set(values.values()) if v}
    known = set(by_pseudonym.values())
    wanted: set[str] = set()
    for entry in held:
        if entry.startswith("@"):
            path = Path(entry[1:]).expanduser()
            if not path.is_file():
                raise DatasetError(f"data.test_groups={entry}: {path} is not a file of values.")
            lines = [line.strip() for line in path.read_text().splitlines()]
            entries = [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line]
        else:
            entries = [(None, entry)]
        for where, value in entries:
            found = by_pseudonym.get(value, value if value in known else None)
            if found is None:
                shown = where or ("" if raw_entries(key, [value]) else value)
                raise DatasetError(
                    f"data.test_groups: {shown or 'an entry'} names no image's {key} (nor its "
                    "pseudonym in split.csv). Check its spelling and data.group_by."
                )
            wanted.add(found)
    return wanted


def held_out(samples: Iterable[Sample], values: Mapping[str, str], wanted: set[str]) -> set[str]:
    """Groups (``group_key``) with any image whose value is in ``wanted``: tested as a whole."""
    return {s.group_key for s in samples if values.get(s.path, "") in wanted}
