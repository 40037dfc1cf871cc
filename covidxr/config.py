"""Helpers that read the project's Hydra config groups outside a Hydra app (tests, benchmarks)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
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


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is configured (or WANDB_MODE says otherwise)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def run_group(default: str) -> str:
    """The multirun's folder name inside a sweep (so its jobs group together), else ``default``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return default


def _register_resolvers() -> None:
    """``${uid:}``: a short random id, cached per config, so run folders never collide.
    ``${wandb_offline:}`` and ``${run_group:default}``: see the functions of those names."""
    resolvers = {"uid": lambda: secrets.token_hex(3), "wandb_offline": wandb_offline}
    resolvers["run_group"] = run_group
    resolvers["append"] = lambda items, item: [*items, item]
    for name, function in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=name == "uid")


_register_resolvers()
