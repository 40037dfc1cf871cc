"""Weights made here: a trunk ``covidxr-pretrain`` trained, with its passport, as a registry entry.

A local weight lives in the cache beside the downloaded ones, as ``local/<name>.pth`` (a
torchvision ResNet50 state_dict without ``fc``) and ``local/<name>.json`` (its passport: method,
epochs, the images it saw and a hash of their list, input size, mean/std, start weight, licence).
Its entry, ``local:<name>``, is a ``WeightSpec`` like the publishers' ones:
``backbone=local:<name>`` trains from it with its own mean/std, ``covidxr-weights list`` shows
it, and the file is checked against the sha256 its passport records before every use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from covidxr.utils.env import weights_dir
from covidxr.utils.io import read_json
from covidxr.weights.registry import TORCHVISION, WeightsError, WeightSpec, get_spec

#: ``backbone=local:<name>``
PREFIX = "local:"
FOLDER = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: What a passport must say for its trunk to be used (the rest is for the model card).
PASSPORT_KEYS = ("method", "input_size", "mean", "std", "start_weight", "licence", "sha256")


def check_name(name: str, option: str = "name") -> str:
    if not _NAME.match(name or ""):
        raise WeightsError(
            f"{option}={name!r}: a local weight's name is letters, digits and _ . - "
            "(it becomes backbone=local:<name>)"
        )
    return name


def local_file(name: str) -> Path:
    return weights_dir() / FOLDER / f"{name}.pth"


def passport_file(trunk: Path) -> Path:
    """The passport beside a trunk file: ``trunk.pth`` -> ``trunk.json``."""
    return trunk.with_suffix(".json")


def read_passport(path: Path) -> dict[str, Any]:
    try:
        passport = read_json(path)
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"{path} is not a covidxr-pretrain passport ({exc}): it lies beside the trunk file "
            "covidxr-pretrain wrote."
        ) from exc
    missing = [k for k in PASSPORT_KEYS if k not in passport]
    if missing:
        raise WeightsError(f"{path} lacks {', '.join(missing)}: not a covidxr-pretrain passport.")
    return passport


def spec_from_passport(name: str, passport: Mapping[str, Any]) -> WeightSpec:
    """A trunk's registry entry, from what its passport says."""
    images = passport.get("images")
    return WeightSpec(
        key=f"{PREFIX}{name}",
        paper_name=name,
        description=f"{passport['method']} on {images if images is not None else '?'} X-rays, "
        f"{passport.get('epochs', '?')} epochs at {passport['input_size']} px, from "
        f"{passport['start_weight']}",
        source=f"covidxr-pretrain ({passport.get('run', 'run folder unknown')})",
        format=TORCHVISION,
        licence=str(passport["licence"]),
        file_name=f"{FOLDER}/{name}.pth",
        published_hash=f"sha256:{passport['sha256']}",
        mean=tuple(float(v) for v in passport["mean"]),
        std=tuple(float(v) for v in passport["std"]),
        native_size=int(passport["input_size"]),
    )


def local_spec(key: str) -> WeightSpec:
    """The entry of ``local:<name>``, read from its passport in the cache."""
    name = check_name(key.removeprefix(PREFIX), "backbone")
    path = passport_file(local_file(name))
    if not path.is_file():
        known = ", ".join(local_keys()) or "none yet"
        raise WeightsError(
            f"backbone={key}: no such local weight in {path.parent} (made here: {known}). Make "
            "it with covidxr-pretrain, or bring one: covidxr-weights import "
            f"{key} <trunk.pth> (its passport .json beside it)."
        )
    return spec_from_passport(name, read_passport(path))


def find_spec(key: str) -> WeightSpec:
    """The entry of any ``backbone=`` key: a publisher's weight, or ``local:<name>``."""
    return local_spec(key) if key.startswith(PREFIX) else get_spec(key)


def local_keys() -> list[str]:
    folder = weights_dir() / FOLDER
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [f"{PREFIX}{name}" for name in names if local_file(name).is_file()]


def local_specs() -> list[WeightSpec]:
    """Every local weight whose passport reads; a damaged one is left out of listings (using
    it names the problem)."""
    specs = []
    for key in local_keys():
        try:
            specs.append(local_spec(key))
        except WeightsError:
            continue
    return specs


def check_free_name(name: str, run: Path, overwrite: bool) -> None:
    """Before any compute: ``local:<name>`` is free, or this run's own (a resumed run)."""
    check_name(name)
    target = passport_file(local_file(name))
    if overwrite or not target.is_file():
        return
    owner = read_json(target).get("run")
    if owner != str(run):
        raise WeightsError(
            f"local:{name} exists already (made by {owner}): choose another name=, or replace "
            "it with replace_weight=true."
        )
