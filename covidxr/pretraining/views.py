"""Views of one X-ray for self-supervised methods: lightly's transforms on covidxr's decode.

Every image is decoded as training decodes it (``read_gray``: DICOM LUTs, 16-bit, EXIF), resized
to the input side, and handed to a lightly multi-view transform as a grey PIL image. The views
come back as uint8 grey ``[1,S,S]`` tensors, so the model normalises them on its device with its
start weight's mean/std, exactly as fine-tuning will feed the trunk.

The X-ray settings (``conf/pretrain.yaml``, ``xray_views``): no horizontal flip (the heart is on
the left: a flipped chest is not another view of the same anatomy), no saturation, hue or
random-greyscale jitter (meaningless on one grey channel), exposure (brightness/contrast) jitter
and blur kept, crop scale configurable.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

#: Views settings that only make sense on colour images: they must stay off on X-rays.
COLOUR_ONLY = ("cj_sat", "cj_hue", "random_gray_scale")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch, NumPy and ``random`` seeded for one draw, then given back their state: lightly's
    transforms draw from the global generators, and a view must be a function of its seed."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class XRayViews:
    """``grey uint8 [H,W] -> [uint8 [1,S,S], ...]``: the views of ``transform`` (a lightly
    multi-view transform built with ``normalize=None``)."""

    def __init__(self, transform: Callable, image_size: int) -> None:
        self.transform, self.image_size = transform, int(image_size)

    def __call__(self, grey: np.ndarray, seed: int) -> list[torch.Tensor]:
        size = (self.image_size, self.image_size)
        image = Image.fromarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), mode="L")
        with seeded(seed):
            views: Sequence[torch.Tensor] = self.transform(image)
        out = []
        for view in views:
            if view.dtype != torch.uint8:  # ToTensor's [0, 1] floats
                view = (view.clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(view[:1])
        return out
