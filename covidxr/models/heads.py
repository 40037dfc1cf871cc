"""Classification heads on top of the 2,048 ResNet50 features."""

from __future__ import annotations

from torch import nn

from covidxr.utils.errors import ConfigError

HEADS = ("linear", "paper")


def build_head(kind: str, in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    """``linear``: dropout + linear. ``paper``: the reference study's MLP (docs/study.md)."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "paper":
        return nn.Sequential(
            nn.Linear(in_features, 2048),
            nn.Dropout(0.5),
            nn.Linear(2048, 2048),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(2048, num_classes),
        )
    raise ConfigError(f"Unknown head {kind!r}: choose one of {HEADS} (model.head).")
