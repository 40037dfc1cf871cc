"""The forms a trained model takes, as one table: a checkpoint, ONNX (fp32 or int8), a
``torch.export`` program. Each row says how a file of that form is recognised (its suffix), how
it is made from a checkpoint, how it is loaded into a ``Predictor``, which precisions it takes and
which of them must pass the accuracy gate first.

``covidxr-export`` (``format=``, ``quantize=``), ``covidxr-predict`` and ``covidxr-eval`` (any
file by its suffix, ``precision=``) and ``covidxr-bench predict`` (every row and precision) read
this table: a new backend is one row here, its writer and its predictor.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from covidxr.inference.export import OPSET, write_onnx, write_program
from covidxr.inference.gate import (
    GateLimits,
    GateResult,
    bf16_gate,
    check_gate,
    compare_forms,
    native_bf16,
    probabilities,
    run_splits,
)
from covidxr.inference.predictors import (
    OnnxPredictor,
    Predictor,
    ProgramPredictor,
    TorchPredictor,
    sidecar,
)
from covidxr.inference.quantize import INT8_RECIPE, calibration_files, quantize_onnx
from covidxr.models.module import XRayClassifier
from covidxr.utils.env import compute_threads
from covidxr.utils.errors import ConfigError, MissingFileError
from covidxr.utils.io import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MakeRequest:
    """What a writer may need beyond the model: calibration images for int8, the ONNX opset."""

    calibration: Sequence[Path] = ()
    opset: int = OPSET


#: A writer: the reference model, the file to write, the precision, the request.
Writer = Callable[[TorchPredictor, Path, str, MakeRequest], Path]


@dataclass(frozen=True)
class ModelForm:
    """One row of the table of forms."""

    name: str  #: ``format=<name>`` of covidxr-export; ``checkpoint`` is what covidxr-train writes
    suffix: str  #: how a file of this form is recognised
    summary: str
    precisions: tuple[str, ...]  #: what it takes; the first is the default
    load: Callable[[Path, str], Predictor]  #: a file of this form, on a device
    write: Writer | None = None  #: from a checkpoint's model; None: not exported
    gated: frozenset[str] = field(default_factory=frozenset)  #: checked against fp32 first
    recipe: dict[str, str] = field(default_factory=dict)  #: how a precision is made, recorded

    def runs(self) -> tuple[str, ...]:
        """The concrete precisions it computes in (``auto`` is a choice among them)."""
        return tuple(p for p in self.precisions if p != "auto")


def _write_onnx(reference: TorchPredictor, output: Path, precision: str, req: MakeRequest) -> Path:
    if precision == "fp32":
        return write_onnx(reference.module, reference.preprocessing, output, req.opset)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = write_onnx(
            reference.module, reference.preprocessing, Path(tmp) / "fp32.onnx", req.opset
        )
        size = reference.preprocessing.image_size
        with atomic_path(output) as target:
            quantize_onnx(fp32, target, req.calibration, size)
    reference.preprocessing.write(sidecar(output))
    return output


def _write_program(reference: TorchPredictor, output: Path, precision: str, _: MakeRequest) -> Path:
    return write_program(reference.module, reference.preprocessing, output)


FORMS: dict[str, ModelForm] = {
    form.name: form
    for form in (
        ModelForm(
            name="checkpoint",
            suffix=".ckpt",
            summary="the Lightning checkpoint in torch: eager fp32 (the reference), channels-last "
            "fp32, or channels-last with bfloat16 autocast",
            precisions=("auto", "fp32", "fp32_cl", "bf16"),
            load=lambda path, device: TorchPredictor.from_checkpoint(path, device),
            gated=frozenset({"bf16"}),
        ),
        ModelForm(
            name="onnx",
            suffix=".onnx",
            summary="ONNX Runtime, fp32 or int8 (static QDQ)",
            precisions=("fp32", "int8"),
            load=lambda path, device: OnnxPredictor(path),
            write=_write_onnx,
            gated=frozenset({"int8"}),
            recipe={"int8": INT8_RECIPE},
        ),
        ModelForm(
            name="pt2",
            suffix=".pt2",
            summary="a torch.export program (graph and weights, no covidxr code needed)",
            precisions=("fp32",),
            load=lambda path, device: ProgramPredictor(path, device),
            write=_write_program,
        ),
    )
}
CHECKPOINT = FORMS["checkpoint"]
EXPORTED = tuple(name for name, form in FORMS.items() if form.write is not None)


def form_of(path: str | os.PathLike) -> ModelForm:
    """The row of a model file, by its suffix (a checkpoint for anything else: torch says so
    in one line when it is not one)."""
    for form in FORMS.values():
        if form.write is not None and str(path).endswith(form.suffix):
            return form
    return CHECKPOINT


def check_export_options(fmt: str, quantize: str | None) -> ModelForm:
    """``format`` names an exported row; ``quantize`` one of its precisions other than fp32."""
    if fmt not in EXPORTED:
        raise ConfigError(f"format={fmt}: choose one of {', '.join(EXPORTED)}.")
    form = FORMS[fmt]
    if quantize is not None and quantize not in form.precisions[1:]:
        takes = [f"format={name}" for name in EXPORTED if quantize in FORMS[name].precisions[1:]]
        raise ConfigError(
            f"quantize={quantize} with format={fmt}: "
            + (f"quantize={quantize} needs {' or '.join(takes)}." if takes else "not a precision.")
        )
    return form


def export_form(
    ckpt_path: str | os.PathLike,
    form: ModelForm,
    output: str | os.PathLike,
    precision: str = "fp32",
    calib_images: int = 256,
    seed: int = 0,
    limits: GateLimits | None = None,
    opset: int = OPSET,
) -> tuple[Path, GateResult | None]:
    """The checkpoint as ``form`` in ``precision``, written to ``output`` with its JSON (how it
    was made, its gate). A gated precision is written only if it passes the accuracy gate on the
    run's test images, against eager fp32; nothing is left otherwise."""
    assert form.write is not None, f"{form.name} is not an exported form"
    output = Path(output)
    reference = TorchPredictor.from_checkpoint(ckpt_path)
    prep = reference.preprocessing
    gated = precision in form.gated
    splits = run_splits(ckpt_path) if gated else {}
    made: dict[str, object] = {
        "form": form.name,
        "precision": precision,
        "source": str(Path(ckpt_path).resolve()),
    }
    calibration: list[Path] = []
    if precision != "fp32" and form.recipe.get(precision):
        calibration = calibration_files(*splits["train"], calib_images, seed, prep.class_names)
        made |= {
            "recipe": form.recipe[precision],
            "calibration_images": len(calibration),
            "calibration_seed": seed,
        }
    request = MakeRequest(calibration, opset)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        candidate = form.write(reference, Path(tmp) / f"model{form.suffix}", precision, request)
        result = None
        if gated:
            files, targets = splits["test"]
            result = compare_forms(
                precision,
                probabilities(reference, files, prep.image_size),
                probabilities(form.load(candidate, "cpu"), files, prep.image_size),
                targets,
                prep,
                limits or GateLimits(),
            )
            check_gate(result, f"{output} was not written.")
        with atomic_path(output) as target:
            os.replace(candidate, target)
    prep.write(sidecar(output), made=made, **({"gate": result.as_dict()} if result else {}))
    log.info("Exported %s to %s (+ %s)", ckpt_path, output, sidecar(output).name)
    return output, result


def checkpoint_predictor(
    ckpt_path: str | os.PathLike, precision: str = "auto", device: str = "cpu", workers: int = 0
) -> TorchPredictor:
    """The fastest torch form of a checkpoint that passed the gate here, and one line saying so.

    ``fp32``: the plain eager reference; ``fp32_cl``: the same numbers in channels-last memory.
    ``bf16``: bfloat16, refused unless it passes the gate. ``auto``: bf16 where the hardware
    computes it natively (AVX512-BF16/AMX, or a GPU) and the gate passed there, else fp32 in
    channels-last memory (faster on oneDNN).
    """
    if precision not in CHECKPOINT.precisions:
        raise ConfigError(f"precision={precision!r}: choose one of {CHECKPOINT.precisions}.")
    if precision in ("fp32", "fp32_cl"):
        log.info(
            "Running %s in %s",
            ckpt_path,
            "plain fp32 (eager)" if precision == "fp32" else "fp32, channels-last",
        )
        return TorchPredictor.from_checkpoint(ckpt_path, device, precision)
    if precision == "auto" and not native_bf16(device):
        log.info("Running %s in fp32, channels-last (no native bf16 on %s)", ckpt_path, device)
        return TorchPredictor.from_checkpoint(ckpt_path, device, "fp32_cl")
    try:
        result = bf16_gate(ckpt_path, device, workers)
    except (MissingFileError, ConfigError) as exc:
        if precision == "bf16":
            raise
        log.info("Running %s in fp32, channels-last (bf16 not checked: %s)", ckpt_path, exc)
        return TorchPredictor.from_checkpoint(ckpt_path, device, "fp32_cl")
    if result.passed:
        log.info("Running %s in bf16 (gate passed here: %s)", ckpt_path, result.describe())
        return TorchPredictor.from_checkpoint(ckpt_path, device, "bf16")
    if precision == "bf16":
        check_gate(result, "Use precision=fp32 or auto.")
    log.info(
        "Running %s in fp32, channels-last (bf16 failed the gate: %s)", ckpt_path, result.describe()
    )
    return TorchPredictor.from_checkpoint(ckpt_path, device, "fp32_cl")


def load_model(
    path: str | os.PathLike, precision: str = "auto", device: str = "cpu", workers: int = 0
) -> Predictor:
    """Any model file as a ``Predictor``: an exported file as it was made (its JSON says how, and
    its gate), a checkpoint in its fastest gated torch form (``checkpoint_predictor``)."""
    torch.set_num_threads(compute_threads())  # SLURM / cgroup limits, not the machine's cores
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path} does not exist.")
    form = form_of(path)
    if form is CHECKPOINT:
        return checkpoint_predictor(path, precision, device, workers)
    if not sidecar(path).is_file():
        raise MissingFileError(
            f"{sidecar(path)} is missing: covidxr-export writes it beside the {form.name} file; "
            "it records the input size, mean/std and class names."
        )
    predictor = form.load(path, device)
    made = _made(path)
    gate = "(gate: passed)" if made.get("gate") else ""
    log.info("Running %s as %s, %s %s", path, form.name, made.get("precision", "as exported"), gate)
    return predictor


def _made(path: Path) -> dict:
    try:
        record = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return {}  # the predictor has read it already and named a damaged one
    made = dict(record.get("made") or {})
    if "gate" in record:
        made["gate"] = record["gate"]
    return made


def source_checkpoint(path: str | os.PathLike) -> Path | None:
    """The checkpoint an exported file was made from (its JSON records it), else None."""
    source = _made(Path(path)).get("source")
    return Path(str(source)) if source else None


def build(
    form: ModelForm,
    model: XRayClassifier,
    precision: str,
    folder: Path,
    calibration: Sequence[Path] = (),
) -> Predictor:
    """A copy of ``model`` as ``form`` in ``precision``, made in ``folder`` (the benchmark's way
    to every row, with or without a checkpoint file)."""
    if form.write is None:
        return TorchPredictor(copy.deepcopy(model), form=precision)
    reference = TorchPredictor(copy.deepcopy(model))
    path = folder / f"{form.name}-{precision}{form.suffix}"
    return form.load(form.write(reference, path, precision, MakeRequest(calibration)), "cpu")
