"""A checkpoint as ONNX or TorchScript, with its preprocessing beside it (``covidxr-export``).

The exported function takes uint8 grey images ``[B,1,S,S]`` (resize only, as covidxr-predict
does) and returns class probabilities; normalisation and the copy to three channels are inside.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from covidxr.inference.predictors import TorchPredictor, sidecar
from covidxr.models.preprocessing import Preprocessing
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_path

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torchscript")


def export(
    ckpt_path: str | os.PathLike, fmt: str, output: str | os.PathLike, opset: int = 17
) -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: choose one of {FORMATS}.")
    predictor = TorchPredictor.from_checkpoint(ckpt_path)
    output = export_module(predictor.module, predictor.preprocessing, fmt, output, opset)
    log.info("Exported %s to %s (+ %s)", ckpt_path, output, sidecar(output).name)
    return output


def export_module(
    module: torch.nn.Module, prep: Preprocessing, fmt: str, output: str | os.PathLike, opset: int
) -> Path:
    """An ``ExportedClassifier`` as ONNX or TorchScript, and its preprocessing JSON beside it."""
    example = torch.zeros(2, 1, prep.image_size, prep.image_size, dtype=torch.uint8)
    output = Path(output)
    with warnings.catch_warnings(), atomic_path(output) as tmp:
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input check is traced away
        if fmt == "onnx":
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["probs"],
                dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        else:
            torch.jit.save(torch.jit.trace(module, example), str(tmp))
    prep.write(sidecar(output))
    return output
