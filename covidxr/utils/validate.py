"""The mechanism of option checks that run before any data is read or any model is built; the
checks themselves live with the code that owns each option (``options.py`` of its package).

Each message names the option as the user types it, its value, and what would work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from covidxr.utils.errors import ConfigError


def check_option(cfg: DictConfig, key: str, ok: Callable[[Any], bool], wanted: str) -> None:
    """``key=<value>: <wanted>.`` (a ``ConfigError``) unless ``ok(value)``; absent keys pass."""
    node, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, node) if node else cfg
    if parent is None or leaf not in parent:
        return
    value = parent[leaf]
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{key}={value}: {wanted}.")


def integer(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def fraction(low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        v = float(v)
        return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    return ok


def one_of(choices: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda v: v in choices


def check_required(cfg: DictConfig) -> None:
    """Options marked ``???`` in the configs must be given on the command line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        given = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} must be given: add {given}.")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
