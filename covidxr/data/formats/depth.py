"""The bit depth of samples deeper than 8 bits, when no header says it: the one rule that 16-bit
PNG/TIFF and DICOM share, so an X-ray reads alike in every format it is shipped in."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: Bit depths 16-bit files hold in practice (CR/DX detectors: 10, 12, 14 bits).
DEPTHS = (10, 12, 14, 16)

_said: set[tuple[str, int]] = set()


def depth_holding(peak: int) -> int:
    """The smallest usual depth whose range holds ``peak`` (<= 4095: 12-bit)."""
    return next((d for d in DEPTHS if peak <= 2**d - 1), DEPTHS[-1])


def said_guess(path: str | os.PathLike, depth: int, missing: str) -> None:
    """One line per kind of file, depth and process: ``path`` was read as ``depth``-bit data
    because ``missing`` (what would have declared it) is absent."""
    if (missing, depth) not in _said:
        _said.add((missing, depth))
        log.warning(
            "%s holds 16-bit samples with no %s: read as %d-bit data (its maximum fits %d bits); "
            "other such files are read the same way",
            path,
            missing,
            depth,
            depth,
        )
