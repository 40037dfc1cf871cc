"""An exclusive lock on a file, held by this process until released or until it ends.

``flock`` locks belong to the open file, so a process that is killed (even ``kill -9``) releases
its lock with its files: a stale lock file never blocks anyone. The holder's pid is written into
the file, so the one that is refused can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_held: dict[Path, int] = {}


class LockHeld(Exception):
    """Another process holds the lock; ``holder`` is its pid as it wrote it (or "")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by process {holder or '?'}")
        self.path = path
        self.holder = holder


def hold(path: str | os.PathLike) -> None:
    """Take the lock on ``path`` (created if needed) or raise ``LockHeld``; a lock this process
    holds already is kept."""
    path = Path(path).resolve()
    if path in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise LockHeld(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def release(path: str | os.PathLike) -> None:
    """Give the lock on ``path`` back (no-op when this process does not hold it)."""
    fd = _held.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)
