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

from covidxr.data.decode import read_gray
from covidxr.utils.errors import ConfigError

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

    def missing_masks(self, relative_paths: Sequence[str]) -> list[str]:
        if self.mode != "lungs":
            return []
        return [p for p in relative_paths if not mask_path(self.root, p).is_file()]

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
