"""Test-time augmentation: the same X-ray seen shifted and scaled, probabilities averaged.

No horizontal flip by default: the heart lies on the left of a chest X-ray, and a flipped image is
one no model was trained on (situs inversus aside).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as F

from covidxr.utils.errors import ConfigError

#: ``(dx, dy, scale)``: shifts as fractions of the side, scale around the centre.
View = tuple[float, float, float]
IDENTITY: View = (0.0, 0.0, 1.0)
NAMED_VIEWS: dict[str, tuple[View, ...]] = {
    "shifts": (
        IDENTITY,
        (0.04, 0.0, 1.0),
        (-0.04, 0.0, 1.0),
        (0.0, 0.04, 1.0),
        (0.0, -0.04, 1.0),
        (0.0, 0.0, 0.92),
        (0.0, 0.0, 1.08),
    ),
}


def resolve_views(tta: str | Sequence[Sequence[float]] | None) -> tuple[View, ...]:
    """``null``/``none``: no TTA; a name from ``NAMED_VIEWS``; or a list of ``[dx, dy, scale]``."""
    if tta is None or tta in ("none", False):
        return ()
    if isinstance(tta, str):
        if tta not in NAMED_VIEWS:
            raise ConfigError(
                f"tta={tta}: choose none, {', '.join(NAMED_VIEWS)}, or a list of "
                "[dx, dy, scale] views, e.g. tta=[[0,0,1],[0.05,0,1]]."
            )
        return NAMED_VIEWS[tta]
    views = []
    for view in tta:
        values = tuple(float(v) for v in view)
        if len(values) != 3 or not 0.5 <= values[2] <= 2 or max(map(abs, values[:2])) > 0.5:
            raise ConfigError(
                f"tta view {list(view)}: give [dx, dy, scale] with shifts within +-0.5 of the "
                "side and a scale from 0.5 to 2."
            )
        views.append(values)
    return tuple(views)


def view(
    images: torch.Tensor, dx: float, dy: float, scale: float, fill: list[float] | None = None
) -> torch.Tensor:
    """A batch ``[B, C, H, W]`` shifted by ``(dx, dy)`` of its side and scaled about its centre;
    uncovered pixels are ``fill`` (black: 0 for raw images, per channel once normalised)."""
    if (dx, dy, scale) == IDENTITY:
        return images
    height, width = images.shape[-2:]
    return F.affine(
        images,
        angle=0.0,
        translate=[round(dx * width), round(dy * height)],
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=F.InterpolationMode.BILINEAR,
        fill=fill,
    )


def averaged(
    images: torch.Tensor, views: Sequence[View], probabilities, fill: list[float] | None = None
) -> torch.Tensor:
    """The mean of ``probabilities(view)`` over ``views`` (just the image without views)."""
    if not views:
        return probabilities(images)
    return torch.stack([probabilities(view(images, *v, fill=fill)) for v in views]).mean(dim=0)
