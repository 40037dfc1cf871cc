"""The ResNet50 trunk (everything but ``fc``) and where its starting weights come from."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50

from covidxr.models.weights import WeightsError, WeightSpec, extract_trunk_state, get_spec

log = logging.getLogger(__name__)

#: Features a ResNet50 trunk hands to the head.
NUM_FEATURES = 2048
#: A local file in torchvision's own format (``backbone=file``).
TORCHVISION_FILE = WeightSpec(
    key="file",
    paper_name="torchvision ResNet50 state_dict",
    description="a local file",
    citation="",
    source="local",
    drop_prefixes=("fc.",),
)


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
        first_line = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise WeightsError(
            f"Cannot load {path} as a weights-only checkpoint ({type(exc).__name__}: "
            f"{first_line}). It may be truncated, not a PyTorch file, or a pickle that would "
            "execute code, which is never loaded."
        ) from exc


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly: every trunk tensor must be matched, nothing may be left over.

    BatchNorm ``num_batches_tracked`` counters are the one exception: files saved before PyTorch
    0.4.1 (torchvision's ImageNet ResNet50) have none, and PyTorch itself sets them to 0.
    """
    expected = trunk.state_dict()
    counters = {k for k in expected if k.endswith("num_batches_tracked")}
    absent_counters = counters - set(state)
    missing = sorted(set(expected) - set(state) - absent_counters)
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f"{source} does not fit a ResNet50 trunk ({len(expected)} tensors): "
            f"{len(missing)} missing {missing[:4]}, {len(unexpected)} unexpected "
            f"{unexpected[:4]}, {len(wrong_shape)} of another shape {wrong_shape[:4]}."
        )
    state = {**state, **{k: torch.zeros((), dtype=torch.long) for k in absent_counters}}
    trunk.load_state_dict(state, strict=True)
    note = (
        f" ({len(absent_counters)} BatchNorm counters absent, set to 0)" if absent_counters else ""
    )
    log.info("Loaded all %d backbone tensors from %s%s", len(expected), source, note)


def load_weights_file(trunk: nn.Module, spec: WeightSpec, path: str | os.PathLike) -> None:
    """Read ``path`` in ``spec``'s publisher format into ``trunk``."""
    checkpoint = load_checkpoint_file(path)
    load_trunk_state(trunk, extract_trunk_state(checkpoint, spec, str(path)), f"{spec.key}: {path}")


def build_backbone(key: str = "random", path: str | os.PathLike | None = None, **_: object):
    """The trunk for backbone config ``key``.

    ``random``: torchvision's initialisation. ``file``: a local torchvision state_dict at ``path``.
    A registry key: ``path`` if given (a manually placed file), else the verified cached file,
    downloaded first where the publisher allows it. Other config fields (mean, std) are ignored.
    """
    trunk = resnet50_trunk()
    if key == "random":
        return trunk
    if key == "file":
        if path is None:
            raise WeightsError("backbone=file needs backbone.path=/path/to/resnet50.pth")
        load_weights_file(trunk, TORCHVISION_FILE, path)
        return trunk
    spec = get_spec(key)
    if path is None:
        from covidxr.models.weights_store import fetch

        path = fetch(key)
    load_weights_file(trunk, spec, path)
    return trunk
