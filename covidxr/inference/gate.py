"""The accuracy gate: a faster form of a model is used or written only after it has scored the
run's own test images (``split.csv``) beside the plain eager fp32 model and kept, on those images,
their AUROC (changed by at most ``max_auroc_change`` either way: a gain is as suspect as a loss),
their labels (at least ``min_agreement`` identical) and the probabilities themselves (none moved by
more than ``max_prob_change``): a model that calls every image one class can keep the labels of a
one-class-heavy test set, never its probabilities.

The result is recorded: in an exported file's JSON, and for torch forms of a checkpoint in
``~/.cache/covidxr/gates/`` (``COVIDXR_GATE_DIR``) per checkpoint and machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from covidxr.data.splitting.spec import SplitSpec
from covidxr.data.splitting.splits import read_split_csv
from covidxr.inference.inputs import batches
from covidxr.inference.predictors import Predictor, TorchPredictor
from covidxr.models.metrics import point_metrics
from covidxr.models.preprocessing import Preprocessing
from covidxr.run_folder import RunFolder, data_root
from covidxr.utils.env import cpu_flags
from covidxr.utils.errors import ConfigError, MissingFileError, UserError
from covidxr.utils.io import read_checkpoint, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateLimits:
    """How far a faster form may stray from fp32 on the test images. ``max_prob_change``: a
    dev-set int8 model (216 images) moved p(positive) by 0.016 on average and 0.094 at most."""

    max_auroc_change: float = 0.005
    min_agreement: float = 0.99
    max_prob_change: float = 0.15


class GateError(UserError):
    """A faster form lost accuracy against full precision: refused, nothing written."""


@dataclass(frozen=True)
class GateResult:
    """Full precision against a faster form on the run's test images."""

    form: str
    images: int
    reference: dict[str, float]
    candidate: dict[str, float]
    auroc_change: float  # candidate - reference
    agreement: float  # share of identical labels
    prob_change: float  # the largest |p - p_fp32| of the positive class
    mean_prob_change: float
    limits: GateLimits

    @property
    def passed(self) -> bool:
        auroc_ok = not abs(self.auroc_change) > self.limits.max_auroc_change  # NaN: one class
        return (
            auroc_ok
            and self.agreement >= self.limits.min_agreement
            and self.prob_change <= self.limits.max_prob_change
        )

    def describe(self) -> str:
        limits = self.limits
        return (
            f"AUROC {self.reference.get('test/auroc', float('nan')):.4f} -> "
            f"{self.candidate.get('test/auroc', float('nan')):.4f} (change "
            f"{self.auroc_change:+.4f}, limit +-{limits.max_auroc_change}), "
            f"{self.agreement:.2%} identical labels (at least {limits.min_agreement:.0%}), "
            f"p(positive) moved by {self.prob_change:.4f} at most (limit {limits.max_prob_change},"
            f" mean {self.mean_prob_change:.4f}) on {self.images} test images"
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, found: dict) -> GateResult:
        """A recorded result; ``TypeError``/``KeyError`` for one recorded by an older covidxr."""
        values = {k: v for k, v in found.items() if k != "passed"}
        return cls(**values | {"limits": GateLimits(**values["limits"])})


def run_splits(ckpt_path: str | os.PathLike) -> dict[str, tuple[list[Path], np.ndarray]]:
    """The files and labels of each split of the checkpoint's run (its ``split.csv``, read and
    checked against the data by ``read_split_csv``)."""
    split_file = RunFolder.of_checkpoint(ckpt_path).split
    if not split_file.is_file():
        raise MissingFileError(
            f"{split_file} is missing: the accuracy gate scores the run's own test images; "
            "keep the checkpoint in its run folder."
        )
    hparams = read_checkpoint(ckpt_path).get("datamodule_hyper_parameters") or {}
    root = data_root(hparams)
    found = read_split_csv(split_file, root, SplitSpec.from_options(hparams).classes)
    if not found["test"]:
        raise ConfigError(f"{split_file} has no test images: the accuracy gate needs them.")
    return {
        name: ([root / s.path for s in samples], np.array([s.label for s in samples], dtype=int))
        for name, samples in found.items()
    }


def probabilities(
    predict: Predictor,
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


def compare_forms(
    form: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    targets: np.ndarray,
    prep: Preprocessing,
    limits: GateLimits = GateLimits(),
) -> GateResult:
    names, positive = list(prep.class_names), prep.positive_index

    def metrics(probs: np.ndarray) -> dict[str, float]:
        values = point_metrics(
            torch.from_numpy(probs).double(), torch.from_numpy(targets), names, positive, "test"
        )
        return {k: v for k, v in values.items() if k.count("/") == 1}

    ref, cand = metrics(reference), metrics(candidate)
    moved = np.abs(candidate[:, positive] - reference[:, positive])
    return GateResult(
        form=form,
        images=len(targets),
        reference=ref,
        candidate=cand,
        auroc_change=cand["test/auroc"] - ref["test/auroc"],
        agreement=float(np.mean(reference.argmax(1) == candidate.argmax(1))),
        prob_change=float(moved.max()),
        mean_prob_change=float(moved.mean()),
        limits=limits,
    )


def check_gate(result: GateResult, refused: str) -> GateResult:
    """Raise ``GateError`` (one line, exit 2) unless the faster form kept the accuracy."""
    if not result.passed:
        raise GateError(
            f"The {result.form} model lost accuracy against fp32: {result.describe()}. "
            f"{refused} Widen max_auroc_change / max_prob_change or lower min_agreement only "
            "if that change is acceptable."
        )
    log.info("Accuracy gate passed for %s: %s", result.form, result.describe())
    return result


# --- torch forms of a checkpoint: one gate per checkpoint and machine ---------------------


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
        try:
            return GateResult.from_dict(records[key])
        except (TypeError, KeyError, AttributeError):
            pass  # recorded by an older covidxr: checked again
    files, targets = run_splits(ckpt_path)["test"]
    log.info(
        "Checking bf16 against fp32 on the run's %d test images (once per machine)", len(files)
    )
    fp32 = TorchPredictor.from_checkpoint(ckpt_path, device)
    bf16 = TorchPredictor.from_checkpoint(ckpt_path, device, "bf16")  # its own copy
    prep = fp32.preprocessing
    reference = probabilities(fp32, files, prep.image_size, workers=workers)
    candidate = probabilities(bf16, files, prep.image_size, workers=workers)
    result = compare_forms("bf16", reference, candidate, targets, prep)
    records[key] = result.as_dict()
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record_path, records)
    except OSError as exc:  # no writable cache: checked again next time
        log.warning("Could not record the bf16 gate in %s: %s", record_path, exc)
    return result
