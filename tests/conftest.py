"""Shared fixtures: tiny synthetic datasets built once per session, the optional real set."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # before albumentations is imported
os.environ.setdefault("WANDB_MODE", "offline")

from pathlib import Path

import cv2
import numpy as np
import pytest

from covidxr.data.synthetic import generate_phantoms
from covidxr.paths import DEFAULT_REAL_DATA, real_data_dir


def write_png(path: Path, value: int = 128, size: int = 32, **kwargs) -> Path:
    """A small valid grey PNG (``value`` varies the content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size), value % 256, np.uint8)
    image[: size // 2] = (value * 7) % 256
    assert cv2.imwrite(str(path), image, **kwargs)
    return path


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 phantoms per class for all four classes, 64 px: the suite's shared small dataset."""
    root = tmp_path_factory.mktemp("phantoms") / "COVID-19_Radiography_Dataset"
    classes = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
    return generate_phantoms(root, per_class=24, classes=classes, size=64, seed=0)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The 2,000 real X-rays beside the checkout; tests using it skip where it is absent."""
    root = real_data_dir()
    if root is None:
        pytest.skip(
            f"real chest X-rays not found at {DEFAULT_REAL_DATA} (set COVIDXR_REAL_DATA to a copy "
            "of the database in its current Kaggle layout to run this test)"
        )
    return root
