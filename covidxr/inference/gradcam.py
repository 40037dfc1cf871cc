"""Grad-CAM (Captum's ``LayerGradCam``) on the last ResNet stage: where the network looked, as
overlays, a grid of test cases, and the share of the map inside the lungs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam

from covidxr.data.formats.decode import read_gray
from covidxr.data.loading.datamodule import XRayDataset
from covidxr.data.loading.occlusion import Occluder, mask_path
from covidxr.data.loading.transforms import build_transform
from covidxr.inference.predictors import ExportedClassifier
from covidxr.models.module import XRayClassifier
from covidxr.models.predictions import Predictions
from covidxr.utils.figures import saved_figure

log = logging.getLogger(__name__)


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
    rows = max(1, -(-len(greys) // columns))
    with saved_figure(path, rows, columns, figsize=(3 * columns, 3.5 * rows), dpi=100) as axes:
        for ax in np.atleast_1d(axes).ravel():
            ax.axis("off")
        for ax, grey, cam, title, ok in zip(
            np.atleast_1d(axes).ravel(), greys, cams, titles, correct, strict=False
        ):
            ax.imshow(cv2.cvtColor(overlay(grey, cam), cv2.COLOR_BGR2RGB))
            ax.set_title(title, fontsize=8, color="green" if ok else "red")
    return Path(path)


def cam_regions(root: Path, relative_paths: Sequence[str], size: int) -> tuple[str, np.ndarray]:
    """Where a chest X-ray model should look: the lung masks when the dataset ships them, else
    the central region (the frame ``data.occlude=center`` keeps, removed)."""
    masks = [mask_path(root, p) for p in relative_paths]
    if all(m.is_file() for m in masks):
        regions = [
            cv2.resize(read_gray(m), (size, size), interpolation=cv2.INTER_NEAREST) > 127
            for m in masks
        ]
        return "lungs", np.stack(regions).astype(np.float32)
    centre = Occluder("center")(np.ones((size, size), np.uint8), "")
    return "center", np.repeat((1 - centre)[None].astype(np.float32), len(masks), axis=0)


def write_test_cam_grid(
    model: XRayClassifier,
    dataset: XRayDataset,
    record: Predictions,
    samples: int,
    path: str | os.PathLike,
) -> tuple[Path, dict[str, float]]:
    """Grad-CAM of up to ``samples`` test images from the run's record of test predictions,
    half correct and half wrong where possible, and the share of CAM energy inside the lungs
    (or the centre) per true class."""
    prep = model.preprocessing
    predicted = prep.decide(record.probs)
    correct = predicted == record.targets
    wrong, right = np.flatnonzero(~correct).tolist(), np.flatnonzero(correct).tolist()
    take_wrong = wrong[: max(samples // 2, samples - len(right))]
    chosen = take_wrong + right[: samples - len(take_wrong)]
    relative = [dataset.samples[int(record.indices[i])].path for i in chosen]
    transform = build_transform(prep.image_size)
    images = torch.stack(
        [transform(image=read_gray(Path(dataset.root) / p))["image"] for p in relative]
    )
    classifier = ExportedClassifier(model, prep).eval().cpu()
    maps = grad_cam(classifier, images, torch.as_tensor(predicted[chosen]))
    names = prep.class_names
    labels = record.targets[chosen]
    titles = [
        f"{Path(p).name}\ntrue {names[t]}, predicted {names[predicted[i]]}"
        for p, t, i in zip(relative, labels, chosen, strict=True)
    ]
    greys = [images[k, 0].numpy() for k in range(len(chosen))]
    path = cam_grid(path, greys, maps, titles, correct[chosen].tolist())
    log.info(
        "Wrote Grad-CAM of %d test images (%d wrong) to %s", len(chosen), len(take_wrong), path
    )
    region, masks = cam_regions(Path(dataset.root), relative, prep.image_size)
    shares = energy_share(maps, masks)
    energy = {f"test/cam_{region}_share": float(np.nanmean(shares))}
    for label, name in enumerate(names):
        if (labels == label).any():
            energy[f"test/cam_{region}_share/{name}"] = float(np.nanmean(shares[labels == label]))
    return path, energy
