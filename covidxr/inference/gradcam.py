"""Grad-CAM (Captum's ``LayerGradCam``) on the last ResNet stage: where the network looked."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from covidxr.inference.predictors import ExportedClassifier


def grad_cam(
    classifier: ExportedClassifier, images: torch.Tensor, targets: torch.Tensor
) -> np.ndarray:
    """Class-activation maps ``[B,H,W]`` in [0, 1] for ``targets``, at the input's resolution."""
    layer = classifier.backbone.layer4
    cam = LayerGradCam(classifier, layer)
    with torch.enable_grad():
        attributions = cam.attribute(images, target=targets.tolist(), relu_attributions=True)
    maps = LayerAttribution.interpolate(attributions, images.shape[-2:], "bilinear")[:, 0]
    maps = maps.detach().cpu().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def energy_share(maps: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Per image, the share of the map's total inside ``regions`` (masks in [0, 1], same shape):
    "the model looks at the lungs" as a number."""
    total = maps.reshape(len(maps), -1).sum(axis=1)
    inside = (maps * regions).reshape(len(maps), -1).sum(axis=1)
    return np.divide(inside, total, out=np.full_like(total, np.nan), where=total > 0)


def overlay(grey: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The X-ray in grey with the map as a JET heat map on top (BGR, uint8)."""
    cam = cv2.resize(cam.astype(np.float32), (grey.shape[1], grey.shape[0]))
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(heat, alpha, base, 1 - alpha, 0)


def save_overlay(path: str | os.PathLike, grey: np.ndarray, cam: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), overlay(grey, cam)):
        raise OSError(f"could not write {path}")
    return path


def cam_grid(
    path: str | os.PathLike,
    greys: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    correct: Sequence[bool],
    columns: int = 4,
) -> Path:
    """A grid of overlays, correct cases framed green and wrong ones red, with their captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(greys) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.5 * rows), dpi=100)
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, grey, cam, title, ok in zip(
        np.atleast_1d(axes).ravel(), greys, cams, titles, correct, strict=False
    ):
        ax.imshow(cv2.cvtColor(overlay(grey, cam), cv2.COLOR_BGR2RGB))
        ax.set_title(title, fontsize=8, color="green" if ok else "red")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
