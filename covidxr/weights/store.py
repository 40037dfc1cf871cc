"""The local cache of pretrained weights: download, import, and checking files never change.

Files live in ``$COVIDXR_WEIGHTS_DIR`` (default ``~/.cache/covidxr/weights``) under their published
names. A download goes to a temporary file in that folder, is checked against the published hash
(torchvision's sha256 prefix, MoCo's md5 prefix), then renamed into place, so a cache never holds
half a file. ``weights.lock.json`` records the sha256 of every file fetched or imported; every
later load checks it, so a file that changed on disk is noticed before it is trained on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from covidxr.utils.env import download_timeout, weights_dir
from covidxr.utils.io import atomic_path, write_json
from covidxr.weights.local import (
    check_name,
    find_spec,
    local_file,
    passport_file,
    read_passport,
    spec_from_passport,
)
from covidxr.weights.registry import WeightsError, WeightSpec

log = logging.getLogger(__name__)
LOCK_FILE = "weights.lock.json"
CHUNK = 1 << 20


def cached_path(spec: WeightSpec) -> Path:
    if spec.file_name is None:
        raise WeightsError(f"Backbone {spec.key!r} has no file to cache. {spec.instructions()}")
    return weights_dir() / spec.file_name


def file_digests(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def check_published_hash(spec: WeightSpec, digests: dict[str, str], where: str) -> None:
    if spec.published_hash is None:
        return
    algorithm, prefix = spec.published_hash.split(":", 1)
    if not digests[algorithm].startswith(prefix):
        raise WeightsError(
            f"{where} is not the published {spec.key} file: its {algorithm} is "
            f"{digests[algorithm][:16]}..., the publisher's starts with {prefix}. "
            f"The file was not kept. {spec.instructions()}"
        )


def read_lock() -> dict[str, dict]:
    path = weights_dir() / LOCK_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def record(spec: WeightSpec, sha256: str, origin: str) -> None:
    """Add or replace ``spec``'s entry in the lock file (written atomically)."""
    lock = read_lock()
    lock[spec.key] = {
        "file": spec.file_name,
        "sha256": sha256,
        "origin": origin,
        "recorded": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        write_json(weights_dir() / LOCK_FILE, dict(sorted(lock.items())))
    except OSError as exc:
        raise WeightsError(
            f"Cannot write {weights_dir() / LOCK_FILE} ({exc.strerror or exc}). Set "
            "COVIDXR_WEIGHTS_DIR to a writable folder."
        ) from exc


def verify_cached(spec: WeightSpec) -> Path:
    """The cached file, checked against the lock file (recorded now if it was placed by hand)."""
    path = cached_path(spec)
    digests = file_digests(path)
    entry = read_lock().get(spec.key)
    if entry is None:
        check_published_hash(spec, digests, str(path))
        record(spec, digests["sha256"], f"placed by hand at {path}")
        log.info("Recorded the sha256 of %s, placed by hand", path)
    elif entry["sha256"] != digests["sha256"]:
        raise WeightsError(
            f"{path} changed since it was recorded in {weights_dir() / LOCK_FILE} (sha256 "
            f"{digests['sha256'][:16]}..., recorded {entry['sha256'][:16]}...). Delete it and run "
            f"`covidxr-weights fetch {spec.key}` (or import it again)."
        )
    return path


def _stream(url: str, dest, on_chunk: Callable[[int, int | None], None]) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "covidxr"})
    with urllib.request.urlopen(request, timeout=download_timeout()) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        while chunk := response.read(CHUNK):
            dest.write(chunk)
            on_chunk(len(chunk), total)


def fetch(key: str, force: bool = False) -> Path:
    """Download ``key`` into the cache (with a progress bar) unless it is there; return its path."""
    spec = find_spec(key)
    path = cached_path(spec)
    if path.is_file() and not force:
        return verify_cached(spec)
    if not spec.downloadable:
        raise WeightsError(
            f"Weights {key!r} cannot be downloaded automatically; expected at {path}. "
            f"{spec.instructions()}"
        )
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn())
    try:
        with (
            atomic_path(path) as tmp,
            tmp.open("wb") as dest,
            Progress(
                *columns, TransferSpeedColumn(), TimeRemainingColumn(), transient=True
            ) as progress,
        ):
            task = progress.add_task(f"Downloading {spec.file_name}", total=None)

            def advance(size: int, total: int | None) -> None:
                progress.update(task, advance=size, total=total)

            _stream(spec.url, dest, advance)
            dest.close()
            digests = file_digests(tmp)
            check_published_hash(spec, digests, spec.url)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"Could not download weights {key!r} from {spec.url} ({reason}) within "
            f"{download_timeout():.0f} s per read. Cache path: {path}. Offline? "
            f"{spec.instructions()}"
        ) from exc
    except OSError as exc:
        raise WeightsError(
            f"Cannot write weights {key!r} into the cache {path.parent} ({exc.strerror or exc}). "
            "Set COVIDXR_WEIGHTS_DIR to a writable folder."
        ) from exc
    record(spec, digests["sha256"], spec.url)
    log.info("Downloaded %s to %s (sha256 %s)", spec.url, path, digests["sha256"])
    return path


def import_file(key: str, source: str | os.PathLike) -> Path:
    """Copy a manually downloaded file into the cache and record it (after ``verify`` passes)."""
    spec = find_spec(key)
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError(f"{source} does not exist: give the downloaded {spec.file_name}.")
    digests = file_digests(source)
    check_published_hash(spec, digests, str(source))
    path = cached_path(spec)
    try:
        with atomic_path(path) as tmp:
            shutil.copyfile(source, tmp)
    except OSError as exc:
        raise WeightsError(
            f"Cannot write {path} ({exc.strerror or exc}). Set COVIDXR_WEIGHTS_DIR to a writable "
            "folder."
        ) from exc
    record(spec, digests["sha256"], f"imported from {source}")
    return path


def install_local(name: str, trunk: Path, overwrite: bool = False) -> Path:
    """Copy ``trunk`` and its passport into the cache as ``local:<name>`` and record its hash.

    A name already taken by another trunk is refused unless ``overwrite``: a study that trained
    from ``local:<name>`` must not find other weights under it later."""
    check_name(name)
    passport = read_passport(passport_file(trunk))
    digest = file_digests(trunk)["sha256"]
    if digest != passport["sha256"]:
        raise WeightsError(
            f"{trunk} is not the trunk its passport describes (sha256 {digest[:16]}..., the "
            f"passport says {str(passport['sha256'])[:16]}...)."
        )
    target = local_file(name)
    if target.is_file() and not overwrite:
        taken = read_passport(passport_file(target))
        if taken["sha256"] != digest:
            raise WeightsError(
                f"local:{name} exists already (made by {taken.get('run', '?')}): choose another "
                f"name, or replace it with replace_weight=true."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(trunk, tmp)
    write_json(passport_file(target), {**passport, "name": name})
    record(spec_from_passport(name, passport), digest, f"made by covidxr-pretrain: {trunk}")
    return target
