"""Predictors: a trained model in one of its forms, called on uint8 grey batches.

Every predictor has the model's ``preprocessing`` (input size, mean/std, class names, decision
threshold: ``XRayClassifier.preprocessing``, or the JSON written beside an exported file) and
maps a batch ``[B,1,S,S]`` uint8 to class probabilities ``[B,C]`` as NumPy. ``ExportedClassifier``
is that whole function in torch, so the checkpoint and every exported file compute the same one.
Which file is which form, and how each is made, is the table in ``covidxr.inference.forms``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.module import XRayClassifier
from covidxr.models.preprocessing import Preprocessing
from covidxr.utils.env import compute_threads
from covidxr.utils.errors import CheckpointError, ConfigError


@runtime_checkable
class Predictor(Protocol):
    """What predict, eval, the accuracy gate and the benchmark call, whatever the form."""

    preprocessing: Preprocessing

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """uint8 ``[B,1,S,S]`` -> probabilities ``[B,C]``."""
        ...


def sidecar(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: the preprocessing recorded beside a model file."""
    return Path(f"{model_path}.json")


class ExportedClassifier(nn.Module):
    """uint8 grey batch ``[B,1,H,W]`` -> class probabilities ``[B,C]``."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.normalize = NormalizeToRGB(preprocessing.mean, preprocessing.std)
        # The plain modules, not the LightningModule: tracing must not touch trainer state.
        self.backbone, self.head = model.backbone, model.head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalize(images))).float().softmax(dim=1)


#: How a checkpoint runs in torch: ``fp32`` is plain eager full precision (the reference that
#: gates and benchmarks compare against); ``fp32_cl`` the same numbers in channels-last memory
#: (oneDNN's fast layout); ``bf16`` channels-last with bfloat16 autocast (needs the accuracy gate).
TORCH_FORMS = ("fp32", "fp32_cl", "bf16")


class TorchPredictor:
    """A covidxr model and its preprocessing, on the CPU or a GPU, in one of ``TORCH_FORMS``."""

    def __init__(self, model: XRayClassifier, device: str = "cpu", form: str = "fp32") -> None:
        if form not in TORCH_FORMS:
            raise ConfigError(f"precision={form!r}: choose one of {TORCH_FORMS}.")
        self.preprocessing = model.preprocessing
        self.device = torch.device(device)
        self.form = form
        self.module = ExportedClassifier(model, self.preprocessing).eval().to(self.device)
        if form != "fp32":
            self.module = self.module.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | os.PathLike, device: str = "cpu", form: str = "fp32"
    ) -> TorchPredictor:
        return cls(XRayClassifier.from_checkpoint(ckpt_path), device, form)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=self.form == "bf16")
        with torch.inference_mode(), autocast:
            return self.module(images.to(self.device)).float().cpu().numpy()


class OnnxPredictor:
    """An exported ONNX file and the preprocessing JSON beside it."""

    def __init__(self, path: str | os.PathLike) -> None:
        import onnxruntime

        self.preprocessing = Preprocessing.read(sidecar(path))
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = compute_threads()
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, ...
            raise CheckpointError(
                f"ckpt_path={path} is not an ONNX model ONNX Runtime can load "
                f"({type(exc).__name__}): it may be truncated. Export it again with covidxr-export."
            ) from exc
        outputs = self.session.get_outputs()[0].shape[-1]
        names = self.preprocessing.class_names
        if isinstance(outputs, int) and outputs != len(names):
            raise ConfigError(
                f"{sidecar(path)} names {len(names)} classes {list(names)} but {path} outputs "
                f"{outputs} probabilities: they belong to different exports. Export it again."
            )

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {"image": images.numpy()})[0]


class ProgramPredictor:
    """A ``torch.export`` program (``.pt2``) and the preprocessing JSON beside it: the model's
    graph and weights without its Python code."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        self.preprocessing = Preprocessing.read(sidecar(path))
        self.device = torch.device(device)
        try:
            self.module = torch.export.load(str(path)).module().to(self.device)
        except Exception as exc:  # torch raises RuntimeError, zipfile and pickle errors
            raise CheckpointError(
                f"ckpt_path={path} is not a torch.export program torch can load "
                f"({type(exc).__name__}): it may be truncated. Export it again with covidxr-export."
            ) from exc

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.module(images.to(self.device)).float().cpu().numpy()
