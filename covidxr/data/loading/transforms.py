"""Image transforms in two halves: per-image work on uint8 grey, per-batch work on the device.

Workers decode, resize and augment one grey uint8 channel and collate uint8 batches ``[B,1,H,W]``:
twelve times fewer bytes to stack, pin and copy than three float channels. ``NormalizeToRGB`` then
turns a batch into the backbone's input (three channels, its mean/std) on the device it was sent
to, where that costs next to nothing. ``XRayClassifier.on_after_batch_transfer`` applies it with
the model's own mean/std, so a Trainer always sees normalised batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import torch
from albumentations.pytorch import ToTensorV2
from torch import nn


def build_transform(image_size: int, augmentations: Sequence[A.BasicTransform] = ()) -> A.Compose:
    """Per-image pipeline: resize, then ``augmentations`` (none for val/test/predict), to tensor."""
    return A.Compose(
        [
            A.Resize(image_size, image_size, interpolation=cv2.INTER_AREA),
            *augmentations,
            ToTensorV2(),
        ]
    )


class NormalizeToRGB(nn.Module):
    """uint8 grey ``[B,1,H,W]`` (0..255) -> float ``[B,C,H,W]`` normalised by per-channel mean/std.

    One fused multiply-add broadcasts the grey channel to ``C = len(mean)`` channels, which is what
    ``ToRGB`` then ``Normalize`` would give per image.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {list(mean)} and std {list(std)}: same length, std > 0")
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(
                f"expected uint8 grey batches [B,1,H,W], got {images.dtype} {list(images.shape)}"
            )
        return torch.addcmul(self.shift, images.float(), self.scale)
