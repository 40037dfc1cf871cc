"""The GPU path (bf16, channels_last, compile) where a CUDA device exists; skipped elsewhere."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_bench_gpu_prints_every_setting(capsys) -> None:
    from covidxr.cli import bench

    assert bench.main(["gpu", "--batch-size", "16", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    for setting in ("fp32", "bf16-mixed", "channels_last", "compile"):
        assert setting in out
