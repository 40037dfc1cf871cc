"""The ResNet50 trunk (everything but ``fc``) and how its starting weights are chosen."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

log = logging.getLogger(__name__)

#: Features a ResNet50 trunk hands to the head.
NUM_FEATURES = 2048


class WeightsError(ValueError):
    """A checkpoint cannot be used as ResNet50 weights; the message says which file and why."""


def resnet50_trunk() -> nn.Module:
    """A randomly initialised torchvision ResNet50 whose classifier is an identity."""
    model = resnet50(weights=None)
    model.fc = nn.Identity()
    return model


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """``torch.load`` with ``weights_only=True``: a pickle that would run code is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise WeightsError(
            f"Cannot load {path} as a weights-only checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). It may be truncated, "
            "not a PyTorch file, or a pickle that would execute code, which is never loaded."
        ) from exc


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly: every trunk tensor must be matched, nothing left over."""
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f"{source} does not hold a ResNet50 trunk: {len(missing)} missing key(s) "
            f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}, "
            f"{len(wrong_shape)} of another shape {wrong_shape[:5]}."
        )
    trunk.load_state_dict(state, strict=True)
    log.info("Loaded %d backbone tensors from %s", len(state), source)


def build_backbone(key: str = "random", path: str | os.PathLike | None = None, **_: object):
    """The trunk for backbone config ``key``: ``random``, or ``file`` (a torchvision state_dict).

    Extra config fields (mean, std, descriptions) are accepted and ignored here.
    """
    trunk = resnet50_trunk()
    if key == "random":
        return trunk
    if key == "file":
        if path is None:
            raise WeightsError("backbone=file needs backbone.path=/path/to/resnet50.pth")
        state = load_checkpoint_file(path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        load_trunk_state(trunk, state, str(path))
        return trunk
    raise WeightsError(f"Unknown backbone key {key!r}: use 'random' or 'file'.")
