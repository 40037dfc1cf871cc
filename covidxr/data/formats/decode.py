"""Decode any chest X-ray file to one 8-bit grey channel: the one reader every part uses.

X-rays carry no colour, so every input (DICOM, 8/12/16-bit grey, RGB, RGBA, JPEG, TIFF) becomes a
single uint8 channel: augmenting one channel is three times cheaper than three, and the transform
pipeline replicates it to the three channels an ImageNet-style backbone expects at the very end.

* DICOM (recognised by content): see ``dicom.py``.
* More than 8 bits (16-bit PNG/TIFF, often 12-bit data exported from a DICOM): read as its bit
  depth says, never stretched by its own range (that would change an image's contrast, and the
  same X-ray would score differently as 8-bit and 16-bit). A PNG with ``sBIT`` whose samples are
  scaled to 16 bits, as the PNG specification says, is shifted back by 16 - sBIT; raw values
  (the maximum fits in sBIT bits, or no sBIT at all: what most converters write) are divided by
  the largest value of their depth, the depth being sBIT or, guessed and said in one line, the
  smallest of 10, 12, 14, 16 bits that holds the maximum (<= 4095: 12-bit).
* EXIF orientation is applied, so a phone photo of a film is read upright (OpenCV turns a TIFF
  upright itself; it is not turned twice).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from covidxr.data.formats.depth import depth_holding, said_guess
from covidxr.data.formats.dicom import DicomError, dicom_to_gray, header_value, is_dicom
from covidxr.utils.errors import UserError

log = logging.getLogger(__name__)
#: Largest image accepted: 10,000 x 10,000 pixels (chest X-rays are at most about 4,300 x 4,300).
MAX_PIXELS = 100_000_000

cv2.utils.logging.setLogLevel(
    cv2.utils.logging.LOG_LEVEL_ERROR
)  # libpng/libjpeg warnings are reported by us, with the file name, instead.


class UnreadableImageError(UserError, ValueError):
    """An image file cannot be decoded; carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        self.path, self.reason = str(path), reason
        if reason is None:  # re-raised from a DataLoader worker: torch passes the whole message
            super().__init__(self.path)
            return
        super().__init__(
            f"Cannot read image {self.path}: {reason}. Run `covidxr-data verify <root>` to list "
            "every unreadable file, or set data.skip_corrupt=true to drop them."
        )


def bit_depth(image: np.ndarray, significant_bits: int | None) -> tuple[int, bool, bool]:
    """``(depth, scaled, guessed)`` of 16-bit samples: their depth, whether they are scaled to
    the full 16 bits (the PNG rule for ``sBIT``), and whether the depth was guessed from the
    maximum (no ``sBIT``)."""
    peak = int(image.max())
    if significant_bits and 8 <= significant_bits < 16:
        return significant_bits, peak > 2**significant_bits - 1, False
    if significant_bits == 16:
        return 16, False, False
    return depth_holding(peak), False, True


def to_uint8_gray(
    image: np.ndarray,
    significant_bits: int | None = None,
    on_guess: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Collapse channels to grey and scale deeper data to 0..255 by its bit depth
    (``bit_depth``); ``on_guess(depth)`` is told when the depth was guessed."""
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
        depth, scaled, guessed = bit_depth(image, significant_bits)
        if guessed and on_guess is not None:
            on_guess(depth)
        values = image >> (16 - depth) if scaled else image
        full = float(2**depth - 1)
        return np.rint(np.clip(values / full, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported pixel type: {image.dtype}")


#: EXIF orientation tag -> how to turn the stored pixels upright (numpy, any channels).
_UPRIGHT = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
    8: lambda a: np.rot90(a, 1),
}
_EXIF_ORIENTATION = 0x0112


TOO_MANY = f"over the limit of {MAX_PIXELS:,} (a decompression bomb, or not a chest X-ray)"


def oversized(width: int, height: int) -> str | None:
    """Why an image whose header declares ``width x height`` is refused, or None if it is not."""
    if width * height > MAX_PIXELS:
        return f"its header declares {width:,} x {height:,} pixels, {TOO_MANY}"
    return None


def read_header(path: str | os.PathLike, buffer: np.ndarray) -> int:
    """Check the declared size before decoding (refusing more than ``MAX_PIXELS``) and return
    the EXIF orientation (1 = upright)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(io.BytesIO(buffer.tobytes())) as header:
                width, height = header.size
                orientation = int(header.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except PIL.Image.DecompressionBombError as exc:
        raise UnreadableImageError(
            path, f"its header declares too many pixels, {TOO_MANY}"
        ) from exc
    except Exception:  # a format PIL does not know, or a broken header: OpenCV decides
        return 1
    reason = oversized(width, height)
    if reason:
        raise UnreadableImageError(path, reason)
    return orientation


def png_significant_bits(buffer: np.ndarray) -> int | None:
    """The grey depth a PNG's ``sBIT`` chunk declares (12 for 12-bit data in 16), if any."""
    data = buffer.tobytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"sBIT":
            chunk = data[offset + 8 : offset + 8 + length]
            return max(chunk[:3]) if chunk else None
        if kind in (b"IDAT", b"IEND"):
            return None
        offset += 12 + length
    return None


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
    if is_dicom(buffer, path):
        try:
            return dicom_to_gray(buffer, oversized, lambda d: said_guess(path, d, "DICOM window"))
        except DicomError as exc:
            raise UnreadableImageError(path, str(exc)) from exc
    orientation = read_header(path, buffer)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise UnreadableImageError(path, f"OpenCV refused it ({exc.err})") from exc
    if image is None:
        raise UnreadableImageError(
            path, "not a decodable DICOM/PNG/JPEG/TIFF (truncated or another format)"
        )
    try:
        depth = png_significant_bits(buffer)
        gray = to_uint8_gray(image, depth, lambda d: said_guess(path, d, "sBIT chunk"))
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from exc
    if orientation in _UPRIGHT and buffer[:4].tobytes() not in (b"II*\x00", b"MM\x00*"):
        gray = np.ascontiguousarray(_UPRIGHT[orientation](gray))
    return gray


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


#: The header fields ``image_header`` reads from a DICOM file.
DICOM_HEADER = ("BitsStored", "Columns", "Rows")


def image_header(path: str | os.PathLike) -> tuple[int, int, int]:
    """Bits per sample, width and height from the file's header, without decoding its pixels
    (DICOM: BitsStored, Columns, Rows): what a report says the images were."""
    path = Path(path)
    with path.open("rb") as fh:
        start = fh.read(132)
    if is_dicom(start, path):
        bits, width, height = (int(header_value(path, k) or 0) for k in DICOM_HEADER)
        return bits, width, height
    with PIL.Image.open(path) as image:
        bits = 16 if image.mode.startswith("I") else 32 if image.mode == "F" else 8
        return bits, image.width, image.height
