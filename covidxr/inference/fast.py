"""Faster forms of a trained model on the CPU, each checked against full precision first.

A faster form (bfloat16 autocast in torch, an int8 ONNX Runtime model) is only used or written
after it has scored the run's own test images (``split.csv``) beside the plain fp32 model and
kept their AUROC (a drop of at most ``max_auroc_drop``) and their labels (at least
``min_agreement`` identical). The result of that accuracy gate is recorded: in the exported
model's JSON, and for torch forms in ``~/.cache/covidxr/gates/`` per checkpoint and machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from covidxr.data.datamodule import SPLIT_FILE
from covidxr.data.spec import SplitSpec
from covidxr.data.splits import read_split_csv, seeded_order
from covidxr.inference.predictors import (
    OnnxPredictor,
    TorchPredictor,
    batches,
    load_predictor,
    sidecar,
)
from covidxr.models.metrics import point_metrics
from covidxr.models.preprocessing import Preprocessing
from covidxr.paths import checkpoint_run_dir
from covidxr.utils.env import compute_threads, cpu_flags
from covidxr.utils.errors import ConfigError, MissingFileError, UserError
from covidxr.utils.io import atomic_path, read_checkpoint, write_json

log = logging.getLogger(__name__)
MAX_AUROC_DROP = 0.005
MIN_AGREEMENT = 0.99
PRECISIONS = ("auto", "fp32", "bf16")


class GateError(UserError):
    """A faster form lost accuracy against full precision: refused, nothing written."""


@dataclass(frozen=True)
class GateResult:
    """Full precision against a faster form on the run's test images."""

    form: str
    images: int
    reference: dict[str, float]
    candidate: dict[str, float]
    auroc_drop: float
    agreement: float
    max_auroc_drop: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        drop_ok = not self.auroc_drop > self.max_auroc_drop  # NaN (one class): labels decide
        return drop_ok and self.agreement >= self.min_agreement

    def describe(self) -> str:
        return (
            f"AUROC {self.reference.get('test/auroc', float('nan')):.4f} -> "
            f"{self.candidate.get('test/auroc', float('nan')):.4f} (drop {self.auroc_drop:+.4f}, "
            f"limit {self.max_auroc_drop}), {self.agreement:.2%} identical labels (at least "
            f"{self.min_agreement:.0%}) on {self.images} test images"
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def run_splits(ckpt_path: str | os.PathLike) -> dict[str, tuple[list[Path], np.ndarray]]:
    """The files and labels of each split of the checkpoint's run (its ``split.csv``, read and
    checked against the data by ``read_split_csv``)."""
    split_file = checkpoint_run_dir(ckpt_path) / SPLIT_FILE
    if not split_file.is_file():
        raise MissingFileError(
            f"{split_file} is missing: the accuracy gate scores the run's own test images; "
            "keep the checkpoint in its run folder."
        )
    hparams = read_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {}
    root = Path(hparams.get("root") or Path(str(hparams.get("manifest", ""))).parent)
    found = read_split_csv(split_file, root, SplitSpec.from_options(hparams).classes)
    if not found["test"]:
        raise ConfigError(f"{split_file} has no test images: the accuracy gate needs them.")
    return {
        name: ([root / s.path for s in samples], np.array([s.label for s in samples], dtype=int))
        for name, samples in found.items()
    }


def score(
    predict: Callable[[torch.Tensor], np.ndarray],
    files: Sequence[Path],
    image_size: int,
    batch_size: int = 32,
    workers: int = 0,
) -> np.ndarray:
    """Probabilities for every file, decoded as covidxr-predict decodes them."""
    out = []
    for images, _, errors in batches(files, image_size, batch_size, workers):
        bad = [e for e in errors if e]
        if bad:
            raise ConfigError(f"An image of the test split cannot be read: {bad[0]}")
        out.append(np.asarray(predict(images)))
    return np.concatenate(out)


def run_gate(
    form: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    targets: np.ndarray,
    prep: Preprocessing,
    max_auroc_drop: float = MAX_AUROC_DROP,
    min_agreement: float = MIN_AGREEMENT,
) -> GateResult:
    names, positive = list(prep.class_names), prep.positive_index

    def metrics(probs: np.ndarray) -> dict[str, float]:
        values = point_metrics(
            torch.from_numpy(probs).double(), torch.from_numpy(targets), names, positive, "test"
        )
        return {k: v for k, v in values.items() if k.count("/") == 1}

    ref, cand = metrics(reference), metrics(candidate)
    return GateResult(
        form=form,
        images=len(targets),
        reference=ref,
        candidate=cand,
        auroc_drop=ref["test/auroc"] - cand["test/auroc"],
        agreement=float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        max_auroc_drop=max_auroc_drop,
        min_agreement=min_agreement,
    )


def check_gate(result: GateResult, refused: str) -> GateResult:
    """Raise ``GateError`` (one line, exit 2) unless the faster form kept the accuracy."""
    if not result.passed:
        raise GateError(
            f"The {result.form} model lost accuracy against fp32: {result.describe()}. "
            f"{refused} Raise max_auroc_drop / lower min_agreement only if that loss is "
            "acceptable."
        )
    log.info("Accuracy gate passed for %s: %s", result.form, result.describe())
    return result


# --- int8 ONNX --------------------------------------------------------------------------------


class _Calibration:
    """Batches of the run's training images for ONNX Runtime's calibration."""

    def __init__(self, files: Sequence[Path], image_size: int, batch_size: int = 16) -> None:
        self._batches = (
            {"image": images.numpy()} for images, _, _ in batches(files, image_size, batch_size)
        )

    def get_next(self):
        return next(self._batches, None)


#: How int8 models are made; measured on a 224 px model of the dev set (240 test images), the
#: recipes ranked by identical labels: plain MinMax 95.4%, MinMax with the first convolution and
#: the head kept in fp32 96.3%, moving-average MinMax 98.3%, both 98.8% (Percentile and Entropy
#: calibration ran out of 24 GiB memory).
INT8_RECIPE = (
    "onnxruntime static quantisation, QDQ, per-channel int8 weights, uint8 activations, "
    "moving-average MinMax calibration; the first convolution and the classifier head in fp32"
)


def quantize_onnx(fp32: Path, output: Path, calibration: Sequence[Path], image_size: int) -> Path:
    """ONNX Runtime static int8 quantisation of an exported model (``INT8_RECIPE``), its
    activation ranges from the ``calibration`` images."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = output.with_name(f"{output.stem}.prepared.onnx")
    quant_pre_process(str(fp32), str(prepared))
    nodes = onnx.load(str(prepared)).graph.node
    convolutions = [n.name for n in nodes if n.op_type == "Conv"]
    head = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul", "Softmax")]
    try:
        quantize_static(
            str(prepared),
            str(output),
            _Calibration(calibration, image_size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[*convolutions[:1], *head],
            extra_options={"CalibMovingAverage": True},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return output


def calibration_files(train_files: Sequence[Path], count: int, seed: int) -> list[Path]:
    """``count`` of the run's training images, chosen by ``seed``."""
    by_name = {str(f): f for f in train_files}
    return [by_name[name] for name in seeded_order(by_name, seed)[:count]]


def quantize_int8(
    ckpt_path: str | os.PathLike,
    output: str | os.PathLike,
    calib_images: int = 256,
    seed: int = 0,
    max_auroc_drop: float = MAX_AUROC_DROP,
    min_agreement: float = MIN_AGREEMENT,
    opset: int = 17,
) -> tuple[Path, GateResult]:
    """The checkpoint as an int8 ONNX model calibrated on ``calib_images`` of the run's training
    images; written (with its gate in its JSON) only if it passes the accuracy gate."""
    from covidxr.inference.export import export_module

    splits = run_splits(ckpt_path)
    test_files, targets = splits["test"]
    chosen = calibration_files(splits["train"][0], calib_images, seed)
    reference = TorchPredictor.from_checkpoint(ckpt_path)
    prep = reference.preprocessing
    output = Path(output)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = export_module(reference.module, prep, "onnx", Path(tmp) / "fp32.onnx", opset)
        quantized = quantize_onnx(fp32, Path(tmp) / "int8.onnx", chosen, prep.image_size)
        prep.write(sidecar(quantized))
        result = run_gate(
            "int8",
            score(reference, test_files, prep.image_size),
            score(OnnxPredictor(quantized), test_files, prep.image_size),
            targets,
            prep,
            max_auroc_drop,
            min_agreement,
        )
        check_gate(result, f"{output} was not written.")
        with atomic_path(output) as target:
            os.replace(quantized, target)
    made = {
        "quantization": INT8_RECIPE,
        "calibration_images": len(chosen),
        "calibration_seed": seed,
        "source": str(Path(ckpt_path).resolve()),
    }
    prep.write(sidecar(output), made=made, gate=result.as_dict())
    return output, result


# --- torch forms on a checkpoint ---------------------------------------------------------------


def machine_key(device: str = "cpu") -> str:
    """This CPU (or GPU) and torch build: a gate passed here need not pass elsewhere."""
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} torch {torch.__version__}"
    flags = " ".join(sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512_vnni", "avx2"}))
    return f"{platform.machine()} {platform.processor()} {flags} torch {torch.__version__}"


def native_bf16(device: str = "cpu") -> bool:
    """bfloat16 computed by the hardware (AVX512-BF16/AMX, or a GPU from Ampere on)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _gate_file(ckpt_path: str | os.PathLike) -> Path:
    path = Path(ckpt_path).resolve()
    stat = path.stat()
    digest = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return Path(os.environ.get("COVIDXR_GATE_DIR", "~/.cache/covidxr/gates")).expanduser() / (
        f"{digest[:24]}.json"
    )


def bf16_gate(ckpt_path: str | os.PathLike, device: str = "cpu", workers: int = 0) -> GateResult:
    """The bf16 gate for this checkpoint on this machine: recorded, or run now and recorded."""
    record_path = _gate_file(ckpt_path)
    key = machine_key(device)
    try:
        records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except (OSError, ValueError):
        records = {}  # a damaged record is checked again
    if key in records:
        found = dict(records[key])
        found.pop("passed", None)
        return GateResult(**found)
    files, targets = run_splits(ckpt_path)["test"]
    log.info(
        "Checking bf16 against fp32 on the run's %d test images (once per machine)", len(files)
    )
    fp32 = TorchPredictor.from_checkpoint(ckpt_path, device)
    bf16 = TorchPredictor.from_checkpoint(ckpt_path, device, "bf16")  # its own copy
    prep = fp32.preprocessing
    reference = score(fp32, files, prep.image_size, workers=workers)
    candidate = score(bf16, files, prep.image_size, workers=workers)
    result = run_gate("bf16", reference, candidate, targets, prep)
    records[key] = result.as_dict()
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record_path, records)
    except OSError as exc:  # no writable cache: checked again next time
        log.warning("Could not record the bf16 gate in %s: %s", record_path, exc)
    return result


def fast_torch_predictor(
    ckpt_path: str | os.PathLike, precision: str = "auto", device: str = "cpu", workers: int = 0
) -> TorchPredictor:
    """The fastest torch form of a checkpoint that passed the gate here, and one line saying so.

    ``fp32``: the plain eager reference. ``bf16``: bfloat16, refused unless it passes the gate.
    ``auto``: bf16 where the hardware computes it natively (AVX512-BF16/AMX, or a GPU) and the
    gate passed there, else fp32 in channels-last memory (the same numbers, faster on oneDNN).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: choose one of {PRECISIONS}.")
    if precision == "fp32":
        log.info("Running %s in plain fp32 (eager)", ckpt_path)
        return TorchPredictor.from_checkpoint(ckpt_path, device)
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


def load_fast_predictor(
    path: str | os.PathLike, precision: str = "auto", device: str = "cpu", workers: int = 0
) -> TorchPredictor | OnnxPredictor:
    """covidxr-predict's model: an exported ONNX file as it is (int8 if it was quantised, its
    gate in its JSON), a checkpoint in its fastest gated torch form (``fast_torch_predictor``)."""
    torch.set_num_threads(compute_threads())  # SLURM / cgroup limits, not the machine's cores
    if Path(path).suffix == ".onnx":
        predictor = load_predictor(path, device)
        gate = json.loads(sidecar(path).read_text()).get("gate")
        made = "int8 (gate: passed)" if gate else "as exported"
        log.info("Running %s with ONNX Runtime, %s", path, made)
        return predictor
    if not Path(path).is_file():
        raise MissingFileError(f"ckpt_path={path} does not exist.")
    return fast_torch_predictor(path, precision, device, workers)
