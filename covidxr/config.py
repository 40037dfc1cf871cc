"""Helpers that read the project's Hydra config groups outside a Hydra app (tests, benchmarks)."""

from __future__ import annotations

import albumentations as A
from hydra.utils import instantiate
from omegaconf import OmegaConf

from covidxr.paths import CONF_DIR


def load_augmentations(name: str = "default") -> list[A.BasicTransform]:
    """Instantiate the training transforms of ``conf/augment/<name>.yaml``."""
    path = CONF_DIR / "augment" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"No augmentation config {path}; choose one of {choices}.")
    return list(instantiate(OmegaConf.load(path).train))
