"""Helpers that read the project's Hydra config groups outside a Hydra app (tests, benchmarks)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

import albumentations as A
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from covidxr.paths import CONF_DIR


def to_builtin(value: Any) -> Any:
    """OmegaConf containers, tuples and paths to plain Python, recursively.

    Hyperparameters stored in checkpoints must be builtins so that ``torch.load(weights_only=True)``
    can read them back.
    """
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtin(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def load_augmentations(name: str = "default") -> list[A.BasicTransform]:
    """Instantiate the training transforms of ``conf/augment/<name>.yaml``."""
    path = CONF_DIR / "augment" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"No augmentation config {path}; choose one of {choices}.")
    return list(instantiate(OmegaConf.load(path).train))


def _register_resolvers() -> None:
    """``${uid:}``: a short random id, cached per config, so run folders never collide."""
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


_register_resolvers()
