"""Inference throughput on the CPU: every path covidxr offers, side by side (``covidxr-bench
predict``), with the accuracy gate's numbers for a trained checkpoint.

Each path is timed twice: the model alone on pre-decoded batches, and end to end (decoding in
worker processes, as covidxr-predict does), with the share of end-to-end time the model waited
for decoded images.
"""

from __future__ import annotations

import contextlib
import json
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from covidxr.data.formats.layout import find_layout
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.inference.forms import FORMS, build
from covidxr.inference.gate import compare_forms, run_splits
from covidxr.inference.inputs import batches
from covidxr.models.module import XRayClassifier
from covidxr.utils.env import compute_threads, real_data_dir

Predict = Callable[[torch.Tensor], np.ndarray]
#: How each row and precision of the table of forms is named in the benchmark's table.
LABELS = {
    ("checkpoint", "fp32"): "torch eager fp32",
    ("checkpoint", "fp32_cl"): "torch channels_last fp32",
    ("checkpoint", "bf16"): "torch channels_last + bf16",
    ("onnx", "fp32"): "ONNX Runtime fp32",
    ("onnx", "int8"): "ONNX Runtime int8 (QDQ)",
    ("pt2", "fp32"): "torch.export program fp32",
}
REFERENCE = LABELS["checkpoint", "fp32"]


def label(form: str, precision: str) -> str:
    return LABELS.get((form, precision), f"{form} {precision}")


def reset_peak() -> None:
    """Start measuring the peak resident memory anew (Linux: ``clear_refs`` resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """Peak resident memory since ``reset_peak`` (VmHWM), else of the whole process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_only(predict: Predict, decoded: Sequence[torch.Tensor]) -> tuple[float, np.ndarray]:
    """Images/s on pre-decoded batches (the first, warm-up, batch untimed), and every output."""
    outputs = [np.asarray(predict(decoded[0]))]
    start = time.perf_counter()
    outputs += [np.asarray(predict(images)) for images in decoded[1:]]
    seen = sum(len(images) for images in decoded[1:])
    return seen / (time.perf_counter() - start), np.concatenate(outputs)


def end_to_end(
    predict: Predict, files: Sequence[Path], size: int, batch_size: int, workers: int
) -> tuple[float, float]:
    """Images/s from files to probabilities, and the share of that time spent waiting for
    decoded batches (the workers' start-up included, as a user sees it)."""
    start = time.perf_counter()
    waited, mark = 0.0, start
    for images, _, _ in batches(files, size, batch_size, workers):
        now = time.perf_counter()
        waited += now - mark
        predict(images)
        mark = time.perf_counter()
    total = time.perf_counter() - start
    return len(files) / total, waited / total


def _inputs(
    ckpt: Path | None, images: int, image_size: int, tmp: Path, console: Console
) -> tuple[XRayClassifier, list[Path], np.ndarray | None, list[Path]]:
    """The model, the files to score (the run's test images for a checkpoint), their labels,
    and calibration images (the run's training images)."""
    if ckpt is not None:
        model = XRayClassifier.from_checkpoint(ckpt)
        splits = run_splits(ckpt)
        files, targets = splits["test"]
        return model, files[:images], targets[:images], splits["train"][0][:256]
    root = real_data_dir()
    if root is None:
        console.print("COVIDXR_REAL_DATA is not set: benchmarking an untrained model on phantoms.")
        root = generate_phantoms(tmp / "phantoms", per_class=images // 2 + 1)
    else:
        console.print(
            f"Benchmarking an untrained model on the real X-rays in {root} (COVIDXR_REAL_DATA).",
            highlight=False,
        )
    every = find_layout(root).files
    files = every[:: max(1, len(every) // images)][:images]
    return XRayClassifier(image_size=image_size), files, None, files[:256]


def bench_predict(
    ckpt: Path | None,
    images: int,
    image_size: int,
    batch_size: int,
    workers: int,
    output: Path,
    console: Console,
) -> dict:
    """Print the table, write it as JSON to ``output``, return it."""
    torch.set_num_threads(compute_threads())
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model, files, targets, calibration = _inputs(ckpt, images, image_size, tmp, console)
        prep = model.preprocessing
        size = prep.image_size
        start = time.perf_counter()
        decoded = [b for b, _, _ in batches(files, size, batch_size, 0)]
        decode_rate = len(files) / (time.perf_counter() - start)
        rows, outputs, gated = {}, {}, []
        for form in FORMS.values():  # every row of the table of forms, in each precision
            for precision in form.runs():
                name = label(form.name, precision)
                if precision in form.gated:
                    gated.append(name)
                reset_peak()
                predict = build(form, model, precision, tmp, calibration)
                rate, outputs[name] = model_only(predict, decoded)
                e2e, waiting = end_to_end(predict, files, size, batch_size, workers)
                rows[name] = {
                    "model_only_images_per_s": rate,
                    "end_to_end_images_per_s": e2e,
                    "waiting_for_decode_share": waiting,
                    "peak_rss_mb": peak_mb(),
                }
                del predict
    reference = rows[REFERENCE]
    for row in rows.values():
        row["end_to_end_vs_eager_fp32"] = (
            row["end_to_end_images_per_s"] / reference["end_to_end_images_per_s"]
        )
        row["model_only_over_end_to_end"] = (
            row["model_only_images_per_s"] / row["end_to_end_images_per_s"]
        )
    gates = {}
    if targets is not None:
        for name in gated:
            gate = compare_forms(name, outputs[REFERENCE], outputs[name], targets, prep)
            gates[name] = gate.as_dict()
    result = {
        "images": len(files),
        "image_size": size,
        "batch_size": batch_size,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "decode_images_per_s_one_process": decode_rate,
        "checkpoint": str(ckpt) if ckpt else None,
        "paths": rows,
        "gates": gates,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    _print(result, console)
    console.print(f"JSON: {output}", highlight=False)
    return result


def _print(result: dict, console: Console) -> None:
    table = Table(
        title=f"Inference, {result['images']} images at {result['image_size']} px, batch "
        f"{result['batch_size']}, {result['threads']} threads, {result['workers']} decoding workers"
    )
    for column in (
        "path",
        "model only img/s",
        "end to end img/s",
        "x eager fp32 (e2e)",
        "model / e2e",
        "waiting for decode",
        "peak RSS MB",
    ):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, row in result["paths"].items():
        table.add_row(
            name,
            f"{row['model_only_images_per_s']:.1f}",
            f"{row['end_to_end_images_per_s']:.1f}",
            f"{row['end_to_end_vs_eager_fp32']:.2f}x",
            f"{row['model_only_over_end_to_end']:.2f}x",
            f"{row['waiting_for_decode_share']:.0%}",
            f"{row['peak_rss_mb']:.0f}",
        )
    console.print(table)
    console.print(
        f"Decoding alone, one process: {result['decode_images_per_s_one_process']:.0f} img/s. "
        "Peak RSS: this process while the path was built and run (the main process; decoding "
        "workers not counted).",
        highlight=False,
    )
    for name, gate in result["gates"].items():
        verdict = "passed" if gate["passed"] else "FAILED"
        console.print(
            f"Gate {name}: {verdict}: AUROC change {gate['auroc_change']:+.4f}, "
            f"{gate['agreement']:.2%} identical labels, p moved by {gate['prob_change']:.4f} at "
            f"most, on {gate['images']} test images",
            highlight=False,
        )
