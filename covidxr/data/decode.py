"""Decode any chest X-ray file to one 8-bit grey channel.

X-rays carry no colour, so every input (8/16-bit grey, RGB, RGBA, JPEG) becomes a single uint8
channel: augmenting one channel is three times cheaper than three, and the transform pipeline
replicates it to the three channels an ImageNet-style backbone expects at the very end.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from covidxr.utils.errors import UserError

#: Largest image accepted: 10,000 x 10,000 pixels (chest X-rays are at most about 4,300 x 4,300).
MAX_PIXELS = 100_000_000

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_ERROR
)  # libpng/libjpeg warnings are reported by us, with the file name, instead.


class UnreadableImageError(UserError, ValueError):
    """An image file cannot be decoded; carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(
            f"Cannot read image {self.path}: {reason}. Run `covidxr-data verify <root>` to list "
            "every unreadable file, or set data.skip_corrupt=true to drop them."
        )


def to_uint8_gray(image: np.ndarray) -> np.ndarray:
    """Collapse channels to grey and scale 16-bit or float data to the 0..255 range."""
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1 or channels == 2:  # grey, or grey + alpha
            image = image[:, :, 0]
        elif channels == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"unsupported number of channels: {channels}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported pixel type: {image.dtype}")


def check_declared_size(path: str | os.PathLike, buffer: np.ndarray) -> None:
    """Refuse a file whose header declares more than ``MAX_PIXELS``, before decoding it."""
    too_many = f"over the limit of {MAX_PIXELS:,} (a decompression bomb, or not a chest X-ray)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(buffer.tobytes())) as header:
                width, height = header.size
    except PIL.Image.DecompressionBombError as exc:
        raise UnreadableImageError(
            path, f"its header declares too many pixels, {too_many}"
        ) from exc
    except Exception:  # a format PIL does not know, or a broken header: OpenCV decides
        return
    if width * height > MAX_PIXELS:
        raise UnreadableImageError(
            path, f"its header declares {width:,} x {height:,} pixels, {too_many}"
        )


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxW uint8 array, or raise ``UnreadableImageError`` naming it.

    Files whose header declares more than ``MAX_PIXELS`` are refused before decoding: a few
    kilobytes of PNG can claim gigabytes of pixels (a decompression bomb).
    """
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImageError(path, exc.strerror or str(exc)) from exc
    if buffer.size == 0:
        raise UnreadableImageError(path, "the file is empty (0 bytes)")
    check_declared_size(path, buffer)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise UnreadableImageError(path, f"OpenCV refused it ({exc.err})") from exc
    if image is None:
        raise UnreadableImageError(path, "not a decodable PNG/JPEG (truncated or another format)")
    try:
        return to_uint8_gray(image)
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from exc


def _check(path: Path) -> tuple[Path, str | None]:
    try:
        read_gray(path)
    except UnreadableImageError as exc:
        return path, exc.reason
    return path, None


def find_unreadable(
    paths: Sequence[Path], workers: int | None = None, console: Console | None = None
) -> list[tuple[Path, str]]:
    """Decode every file in parallel threads with a progress bar; ``(path, reason)`` per failure."""
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=console or Console(stderr=True), transient=True
    ) as progress:
        task = progress.add_task("Decoding every image", total=len(paths))
        return list(scan_unreadable(paths, workers, on_done=lambda: progress.advance(task)))


def scan_unreadable(
    paths: Iterable[Path], workers: int | None = None, on_done: Callable[[], None] | None = None
) -> Iterator[tuple[Path, str]]:
    """Decode every file, yield ``(path, reason)`` per failure (threads: OpenCV frees the GIL)."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for path, reason in pool.map(_check, paths):
            if on_done is not None:
                on_done()
            if reason is not None:
                yield path, reason
