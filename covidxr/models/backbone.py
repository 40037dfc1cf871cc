"""The ResNet50 trunk (everything but ``fc``) and its starting weights, as the registry says."""

from __future__ import annotations

import os

from torch import nn
from torchvision.models import resnet50

from covidxr.weights.adapters import load_weights_file
from covidxr.weights.local import find_spec
from covidxr.weights.registry import WeightsError

#: Features a ResNet50 trunk hands to the head.
NUM_FEATURES = 2048


def resnet50_trunk() -> nn.Module:
    """A randomly initialised torchvision ResNet50 whose classifier is an identity."""
    model = resnet50(weights=None)
    model.fc = nn.Identity()
    return model


def build_backbone(key: str = "random", path: str | os.PathLike | None = None, **_: object):
    """The trunk for backbone config ``key`` (a registry entry).

    ``path`` if given (a manually placed file, or ``backbone=file``), else the verified cached
    file, downloaded first where the publisher allows it. Other config fields (mean, std) are
    the model's preprocessing, not the trunk's.
    """
    spec = find_spec(key)
    trunk = resnet50_trunk()
    if not spec.loads_file:
        return trunk
    if path is None:
        if spec.requires_path:
            raise WeightsError(f"backbone={key} needs backbone.path=/path/to/resnet50.pth")
        from covidxr.weights.store import fetch

        path = fetch(key)
    load_weights_file(trunk, spec.format, path)
    return trunk
