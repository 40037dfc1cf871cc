"""Atomic writes: a reader never sees half a file, and an old file survives a crash mid-write."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from covidxr.utils.errors import (
    CheckpointError,
    ConfigError,
    DiskFullError,
    MissingFileError,
    UserError,
)


def current_umask() -> int:
    """The process's umask (reading it means setting it: set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: errno values of a write that found no space (a full disk, a used-up quota)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(exc: BaseException, free: int, written: int) -> bool:
    """Whether ``exc`` is a write that ran out of space. ``torch.save`` reports it as a bare
    ``RuntimeError`` ("file write failed"): then the ``free`` space left is the sign."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, RuntimeError) and "write" in str(exc) and free < max(written, 1 << 20)


@contextlib.contextmanager
def partial_file(path: str | os.PathLike) -> Iterator[Path]:
    """``<path>.part``: removed if the block fails; a write that ran out of space becomes one
    ``DiskFullError`` naming the folder, the space free and the space the file needed so far."""
    partial = Path(f"{path}.part")
    try:
        yield partial
    except Exception as exc:
        written = partial.stat().st_size if partial.exists() else 0
        partial.unlink(missing_ok=True)
        folder = partial.parent
        free = shutil.disk_usage(folder).free
        if not _out_of_space(exc, free, written):
            raise
        target = Path(path)
        needed = max(written, target.stat().st_size if target.exists() else 0)
        raise DiskFullError(
            f"No space left in {folder} to write {target.name} ({free / 2**20:.0f} MB free, "
            f"at least {needed / 2**20:.0f} MB needed): free space there, or give another "
            "folder; the partial file was removed."
        ) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block ends without error.

    For writers that want a path (``torch.save``, ``shutil.copyfile``, a download); on error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode any other output gets, so a
        # team sharing a dataset or run folder (and its caches) can read it.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` once the whole file is written."""
    if "newline" not in open_kwargs and "b" not in mode:
        open_kwargs["newline"] = ""
    with atomic_path(path) as tmp, tmp.open(mode, **open_kwargs) as fh:
        yield fh


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file covidxr wrote, or one line naming it when it is damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc}): remove or replace it.") from exc


def write_json(path: str | os.PathLike, data: Mapping[str, object]) -> Path:
    """Write JSON atomically (NaN allowed: a metric that could not be computed)."""
    with atomic_write(path) as fh:
        fh.write(json.dumps(data, indent=2, allow_nan=True) + "\n")
    return Path(path)


def check_new_output(
    path: str | os.PathLike, overwrite: bool = False, option: str = "output"
) -> Path:
    """``path`` if a result can be written there, checked before any work: not a folder, not an
    existing file unless ``overwrite``, in a folder that can be created and written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option}={path} is a folder: give a file name in it.")
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{option}={path} exists: give another file name, or overwrite=true to replace it."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option}={path}: cannot write in {path.parent} ({exc.strerror or exc}). Give a "
            "folder you can write to."
        ) from exc
    return path


def check_checkpoint(path: str | os.PathLike, option: str = "ckpt_path") -> Path:
    """``path`` if it is a whole PyTorch checkpoint file, else one line naming ``option``.

    PyTorch writes zip archives whose directory sits at the end and lists a ``data.pkl``: a
    truncated file, or any other kind of file (another zip too), is caught here without loading.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{option}={path} does not exist or is not a file.")
    if not zipfile.is_zipfile(path) or not _lists_torch_data(path):
        raise CheckpointError(
            f"{option}={path} is not a whole PyTorch checkpoint (truncated, or another kind of "
            "file): give a .ckpt that covidxr-train wrote."
        )
    return path


def _lists_torch_data(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_checkpoint(
    path: str | os.PathLike, error: type[UserError] = CheckpointError, what: str = "checkpoint"
) -> dict:
    """``torch.load(weights_only=True)`` on the CPU, or ``error`` naming the file.

    torch's own message suggests ``weights_only=False``, which covidxr never does: not quoted.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{what.capitalize()} {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise error(
            f"Cannot load {path} as a weights-only PyTorch {what} ({type(exc).__name__}). "
            "It may be truncated, not a PyTorch file, or a pickle that would execute code, which "
            "covidxr never loads. Write or download it again, or give another file."
        ) from exc
