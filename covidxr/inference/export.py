"""Writers of exported files: a model (``ExportedClassifier``) as ONNX or as a ``torch.export``
program, each with its preprocessing JSON beside it.

The exported function takes uint8 grey images ``[B,1,S,S]`` (resize only, as covidxr-predict
does) and returns class probabilities, with a dynamic batch size; normalisation and the copy to
three channels are inside. Which writer makes which form is the table in
``covidxr.inference.forms``.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import torch

from covidxr.inference.predictors import sidecar
from covidxr.models.preprocessing import Preprocessing
from covidxr.utils.io import atomic_path

#: The ONNX opset: the current exporter (``torch.onnx.export(dynamo=True)``) writes 18 and up.
OPSET = 18
#: Batch sizes an exported model accepts.
BATCH = torch.export.Dim("batch", min=1, max=65536)


def _example(prep: Preprocessing) -> tuple[torch.Tensor]:
    return (torch.zeros(2, 1, prep.image_size, prep.image_size, dtype=torch.uint8),)


def write_onnx(
    module: torch.nn.Module, prep: Preprocessing, output: str | os.PathLike, opset: int = OPSET
) -> Path:
    """ONNX through torch's current exporter (``dynamo=True``, via ``torch.export``; the legacy
    TorchScript-based one is deprecated): probabilities equal to the checkpoint's to 2e-12 on a
    64 px ResNet50 (the tests hold them to 1e-4)."""
    output = Path(output)
    with atomic_path(output) as tmp, contextlib.redirect_stdout(io.StringIO()):  # its progress
        program = torch.onnx.export(
            module.eval(),
            _example(prep),
            input_names=["image"],
            output_names=["probs"],
            dynamic_shapes=({0: BATCH},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        program.save(str(tmp))
    prep.write(sidecar(output))
    return output


def write_program(module: torch.nn.Module, prep: Preprocessing, output: str | os.PathLike) -> Path:
    """A ``torch.export`` program (``.pt2``): graph and weights, loadable without covidxr's code
    (``torch.export.load(path).module()``); TorchScript's successor."""
    output = Path(output)
    program = torch.export.export(module.eval(), _example(prep), dynamic_shapes=({0: BATCH},))
    with atomic_path(output) as tmp, tmp.open("wb") as fh:
        torch.export.save(program, fh)
    prep.write(sidecar(output))
    return output
