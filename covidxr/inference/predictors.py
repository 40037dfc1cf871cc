"""Scoring new X-rays with a trained model: the model's own preprocessing, any input files.

The preprocessing (input size, mean/std, class names, decision threshold) is the model's
(``XRayClassifier.preprocessing``), or the JSON written beside an exported model.
``ExportedClassifier`` is the whole path from uint8 grey pixels to class probabilities, so the
PyTorch checkpoint, the ONNX file and the TorchScript file all compute the same function.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from covidxr.data.decode import UnreadableImageError, read_gray
from covidxr.data.layout import is_image_file, natural_key
from covidxr.data.transforms import NormalizeToRGB, build_transform
from covidxr.models.module import XRayClassifier
from covidxr.models.preprocessing import Preprocessing
from covidxr.utils.env import compute_threads
from covidxr.utils.errors import CheckpointError, ConfigError, MissingFileError


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


def expand_inputs(inputs: Sequence[str | os.PathLike], skip: Sequence[Path] = ()) -> list[Path]:
    """Files, folders (their images below, recursively) and glob patterns, in order.

    In folders only image files count (a README or Thumbs.db is not a failed X-ray), and nothing
    under ``skip`` (this run's own outputs: its CSV and overlays, when written inside an input
    folder). Files named one by one are taken as they are.
    """
    skipped = [Path(s).resolve() for s in skip]

    def wanted(p: Path) -> bool:
        resolved = p.resolve()
        return (
            p.is_file()
            and not p.name.startswith(".")
            and is_image_file(p)
            and not any(resolved == s or s in resolved.parents for s in skipped)
        )

    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = (p for p in path.rglob("*") if wanted(p))
            files.extend(sorted(found, key=lambda p: natural_key(str(p))))
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(glob.glob(str(path), recursive=True), key=natural_key)
            if not matches:
                raise MissingFileError(f"Input {item} is not a file, folder or matching glob.")
            files.extend(Path(m) for m in matches if Path(m).is_file())
    return list(dict.fromkeys(files))


class ImageFiles(Dataset):
    """``(uint8 [1,S,S], index, error)``: an unreadable file yields zeros and its error."""

    def __init__(self, files: Sequence[Path], image_size: int) -> None:
        self.files, self.image_size = list(files), image_size
        self.transform = build_transform(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            image = self.transform(image=read_gray(self.files[index]))["image"]
            return image, index, ""
        except UnreadableImageError as exc:
            return (
                torch.zeros(1, self.image_size, self.image_size, dtype=torch.uint8),
                index,
                exc.reason,
            )


def batches(
    files: Sequence[Path], image_size: int, batch_size: int = 32, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, list[int], list[str]]]:
    loader = DataLoader(
        ImageFiles(files, image_size), batch_size=batch_size, num_workers=num_workers
    )
    for images, indices, errors in loader:
        yield images, indices.tolist(), list(errors)


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


def load_predictor(path: str | os.PathLike, device: str = "cpu") -> TorchPredictor | OnnxPredictor:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path} does not exist.")
    if path.suffix == ".onnx":
        if not sidecar(path).is_file():
            raise MissingFileError(
                f"{sidecar(path)} is missing: covidxr-export writes it beside the ONNX file; it "
                "records the input size, mean/std and class names."
            )
        return OnnxPredictor(path)
    return TorchPredictor.from_checkpoint(path, device)
