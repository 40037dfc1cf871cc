"""int8 ONNX models: ONNX Runtime static quantisation of an exported fp32 model, its activation
ranges calibrated on the run's training images (``INT8_RECIPE``). The result is only kept after
the accuracy gate (``covidxr.inference.export.export_form``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from covidxr.data.splitting.splits import seeded_order
from covidxr.inference.inputs import batches

log = logging.getLogger(__name__)
#: Fewer calibration images than this give int8 ranges that rarely fit unseen images.
FEW_CALIBRATION_IMAGES = 32


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


def calibration_files(
    train_files: Sequence[Path],
    labels: Sequence[int],
    count: int,
    seed: int,
    class_names: Sequence[str],
) -> list[Path]:
    """``count`` of the run's training images, chosen by ``seed``; one warning when they are few
    or miss a class (ranges calibrated on one class clip the other's activations)."""
    by_name = {str(f): (f, int(y)) for f, y in zip(train_files, labels, strict=True)}
    chosen = [by_name[name] for name in seeded_order(by_name, seed)[:count]]
    held = np.unique([y for _, y in chosen])
    missing = [name for i, name in enumerate(class_names) if i not in held]
    if missing or len(chosen) < FEW_CALIBRATION_IMAGES:
        log.warning(
            "calib_images=%d: the int8 ranges are calibrated on %d training image(s)%s; give a "
            "few hundred (the default is 256) so that they hold every class.",
            count,
            len(chosen),
            f" with no {', '.join(missing)}" if missing else "",
        )
    return [f for f, _ in chosen]
