"""Shortcut controls: hide the lungs and see how much of a score is left.

``center`` blacks out the middle of the image and keeps a frame of ``border`` (a fraction of the
side) on each edge, where source markers, labels and collimation live. ``lungs`` blacks out the
lung masks the database's current release ships in ``<Class>/masks/<same file name>``. Applied to
the decoded image before resizing and augmentation, in every split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from covidxr.data.formats.decode import read_gray, scan_unreadable
from covidxr.utils.errors import ConfigError, DatasetError

OCCLUSIONS = ("none", "center", "lungs")


def mask_path(root: Path, relative_path: str) -> Path:
    """``<Class>/images/<name>`` -> ``<Class>/masks/<name>`` (the current release's layout)."""
    path = Path(relative_path)
    return root / path.parent.parent / "masks" / path.name


class Occluder:
    """Blacks out part of each image (``mode``: none, center or lungs)."""

    def __init__(self, mode: str = "none", border: float = 0.2, root: Path | None = None) -> None:
        if mode not in OCCLUSIONS:
            raise ConfigError(f"data.occlude={mode!r}: choose one of {list(OCCLUSIONS)}.")
        if not 0 < border < 0.5:
            raise ConfigError(f"data.occlude_border={border}: give a fraction in (0, 0.5).")
        self.mode, self.border, self.root = mode, border, root

    def check_masks(self, relative_paths: Sequence[str]) -> None:
        """``lungs``: every image has a mask that decodes, checked before training (a missing or
        broken mask would stop a run in the middle)."""
        if self.mode != "lungs":
            return
        masks = [mask_path(self.root, p) for p in relative_paths]
        missing = [m for m in masks if not m.is_file()]
        if missing:
            raise DatasetError(
                f"data.occlude=lungs needs the lung masks the database's current release ships "
                f"in <Class>/masks/: {len(missing)} of {len(masks)} images under {self.root} "
                f"have none, e.g. {missing[0]}. Use data.occlude=center instead."
            )
        bad = list(scan_unreadable(masks))
        if bad:
            listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
            raise DatasetError(
                f"data.occlude=lungs: {len(bad)} lung mask(s) cannot be read: {listed}. Replace "
                "them, or use data.occlude=center."
            )

    def __call__(self, image: np.ndarray, relative_path: str) -> np.ndarray:
        if self.mode == "none":
            return image
        image = image.copy()
        if self.mode == "center":
            h, w = image.shape[:2]
            dy, dx = round(self.border * h), round(self.border * w)
            image[dy : h - dy, dx : w - dx] = 0
            return image
        mask = read_gray(mask_path(self.root, relative_path))
        if mask.shape != image.shape:
            mask = cv2.resize(
                mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST
            )
        image[mask > 127] = 0
        return image
