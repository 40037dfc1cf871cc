"""DICOM chest X-rays to the 8-bit grey the models use, and header values for grouping.

Pixels go through the display pipeline of DICOM PS3.3 C.11: the modality LUT (rescale slope and
intercept), then the VOI LUT or else the first window (centre/width), else the modality output's
full stored range; MONOCHROME1 (white = air) is inverted. Without a window, 16 stored bits whose
largest value fits fewer (12-bit detector data written as 16, which read near-black at full scale)
are read at the depth that value shows, as for 16-bit PNGs (``depth.depth_holding``), said once.
Files are recognised by their ``DICM`` preamble, so a DICOM without an extension is read like any
other.

Decoders: uncompressed and RLE Lossless need only pydicom; JPEG Baseline/Extended and JPEG 2000
decode with Pillow (a dependency); JPEG Lossless (process 14, common in CR/DX archives) and
JPEG-LS need ``pylibjpeg-libjpeg`` (GPLv3, so optional: ``pip install covidxr[dicom]``).
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Callable, Sequence

import numpy as np

from covidxr.data.formats.depth import depth_holding

#: A DICOM Part 10 file: a 128-byte preamble, then these four bytes.
DICOM_MAGIC = b"DICM"
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


class DicomError(ValueError):
    """A DICOM file that cannot become one grey image; the message says why."""


def is_dicom(buffer: bytes | np.ndarray, path: str | os.PathLike = "") -> bool:
    """True for a DICOM Part 10 file (by content), or a ``.dcm`` file without the preamble."""
    head = bytes(buffer[128:132])
    return head == DICOM_MAGIC or os.path.splitext(str(path))[1].lower() in DICOM_SUFFIXES


def _dataset(source: bytes | np.ndarray | str | os.PathLike, stop_before_pixels=False, tags=None):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not isinstance(source, str | os.PathLike):
        source = io.BytesIO(bytes(source))
    try:
        return pydicom.dcmread(
            source,
            force=True,
            stop_before_pixels=stop_before_pixels,
            specific_tags=tags,
        )
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing to 0..1 (LINEAR, LINEAR_EXACT or SIGMOID)."""
    if function in ("SIGMOID", "LINEAR_EXACT") and not width > 0:
        raise DicomError(f"its {function} window width {width} is not above 0 (PS3.3 C.11.2.1.2)")
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise DicomError(f"its window width {width} is below 1")
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _first(value) -> float:
    """The first of a multi-valued element (several windows may be offered)."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | Sequence) else value)


def _stored_range(
    ds, stored: np.ndarray, on_guess: Callable[[int], None] | None = None
) -> tuple[float, float]:
    """The modality output's range for the stored bits: what full scale means without a window.
    16 unsigned stored bits holding a smaller depth's values are read at that depth."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    signed = bool(ds.get("PixelRepresentation", 0))
    if bits == 16 and not signed and stored.size:
        bits = depth_holding(int(stored.max()))
        if bits < 16 and on_guess is not None:
            on_guess(bits)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0))
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return ends[0], ends[1]


def _pixels(ds) -> np.ndarray:
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        name = getattr(syntax, "name", syntax) or "unknown"
        if importlib.util.find_spec("libjpeg") is not None:  # the extra is there: say what failed
            raise DicomError(f"its transfer syntax {name} could not be decoded ({exc})") from exc
        raise DicomError(
            f"its transfer syntax {name} cannot be decoded here; JPEG Lossless and JPEG-LS need "
            "`pip install covidxr[dicom]` (pylibjpeg-libjpeg)"
        ) from exc
    except (ValueError, AttributeError, EOFError) as exc:
        raise DicomError(f"its pixel data is damaged or truncated ({exc})") from exc


def _voi_lut(values: np.ndarray, ds) -> np.ndarray:
    """The first VOI LUT (PS3.3 C.11.2.1.1) applied to modality values, scaled to 0..1.

    Written here, not pydicom's ``apply_voi``: pydicom 3.0.2 indexes an 8-bit LUT with an uint8
    array, so a LUT of more than 256 entries wraps (a LUT reaching grey 240 read as 61)."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16
    if not (bits == 8 or 10 <= bits <= 16):
        raise DicomError(f"its VOI LUT has {bits} bits per entry (PS3.3 allows 8 or 10-16)")
    data = item.LUTData
    if isinstance(data, bytes):  # OW: 16-bit words in the dataset's byte order
        order = "<" if getattr(ds, "is_little_endian", True) is not False else ">"
        lut = np.frombuffer(data, dtype=f"{order}u2")[:entries]
    else:
        lut = np.atleast_1d(np.asarray(data, dtype=np.int64))
    if len(lut) < entries:
        raise DicomError(f"its VOI LUT holds {len(lut)} of the {entries} entries it declares")
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, entries - 1)
    return lut.astype(np.float64)[index] / float(2**bits - 1)


def dicom_to_gray(
    buffer: bytes | np.ndarray,
    oversized: Callable[[int, int], str | None] = lambda w, h: None,
    on_guess: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Decode a DICOM file's bytes to HxW uint8 grey, or raise ``DicomError`` saying why.
    ``oversized(columns, rows)`` names a declared size to refuse before the pixels are read;
    ``on_guess(depth)`` is told when the depth of 16 stored bits was read from their maximum."""
    from pydicom.pixels import apply_modality_lut

    ds = _dataset(buffer)
    reason = oversized(int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0))
    if reason:
        raise DicomError(reason)
    if "PixelData" not in ds:
        kinds = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        raise DicomError(
            "it holds float pixel data, not an X-ray image" if kinds else "it has no pixel data"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"it is multi-frame ({frames} frames); export the X-ray as one frame")
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise DicomError(
            f"it is a colour image ({photometric}, {samples} samples per pixel), not a grey X-ray"
        )
    stored = _pixels(ds)
    values = apply_modality_lut(stored, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        scaled = _voi_lut(values, ds)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
        scaled = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    else:
        low, high = _stored_range(ds, stored, on_guess)
        scaled = (values - low) / max(high - low, 1e-12)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def header_value(path: str | os.PathLike, keyword: str) -> str:
    """One header value as text (``PatientID``, ``InstitutionName``); pixels are never read, so
    indexing thousands of files stays fast."""
    from pydicom.datadict import tag_for_keyword

    ds = _dataset(path, stop_before_pixels=True, tags=[tag_for_keyword(keyword)])
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def is_dicom_keyword(name: str) -> bool:
    """True when ``name`` is a DICOM attribute keyword (``PatientID``, ``Manufacturer``)."""
    from pydicom.datadict import tag_for_keyword

    return tag_for_keyword(name) is not None


def write_dicom(
    path: str | os.PathLike,
    gray: np.ndarray,
    *,
    bits_stored: int = 8,
    monochrome1: bool = False,
    rescale: tuple[float, float] | None = None,
    attributes: dict[str, str] | None = None,
    compress: str | None = None,
) -> None:
    """Write 8-bit grey pixels as a DX DICOM that decodes back to them exactly.

    ``bits_stored`` > 8 stores ``gray << (bits_stored - 8)`` in 16 bits, with the window (and,
    with ``rescale=(slope, intercept)``, the modality LUT) that maps it back; ``monochrome1``
    stores it inverted; ``compress`` names a transfer syntax (``RLELossless``,
    ``JPEG2000Lossless``).
    ``attributes`` are header keywords (``PatientID``, ``InstitutionName``). Synthetic data and
    tests use it; covidxr never writes patient data.
    """
    import pydicom.uid
    from pydicom.dataset import FileDataset, FileMetaDataset

    shift = bits_stored - 8
    stored = gray.astype(np.uint16 if bits_stored > 8 else np.uint8) << shift
    if monochrome1:
        stored = (2**bits_stored - 1) - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, presentation
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "DX"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    if shift or rescale:
        slope, intercept = rescale or (1.0, 0.0)
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        # The window that maps slope * stored + intercept back to 0..255 (PS3.3 C.11.2.1.2);
        # MONOCHROME1 is windowed before it is inverted, so the window starts at its darkest.
        step = slope * 2**shift
        darkest = (2**bits_stored - 1) - (255 << shift) if monochrome1 else 0
        low = slope * darkest + intercept
        ds.WindowCenter, ds.WindowWidth = f"{low + 255 * step / 2 + 0.5:g}", f"{255 * step + 1:g}"
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.tobytes()
    if compress:
        ds.compress(getattr(pydicom.uid, compress))
    ds.save_as(path, enforce_file_format=True)
