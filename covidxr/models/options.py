"""Checks of the model's, optimizer's and trainer's options, before any data is read."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from covidxr.utils.compat import onednn_bf16
from covidxr.utils.errors import ConfigError
from covidxr.utils.validate import check_option, cuda_available, fraction, integer

log = logging.getLogger(__name__)


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one fails here, not after the data is indexed."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda") and not cuda_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine. Use "
            "trainer=cpu (or trainer=default, which picks what is there)."
        )


#: Lightning's bfloat16 precisions.
BF16_PRECISIONS = ("bf16-mixed", "bf16-true", "bf16")


def check_precision(cfg: DictConfig) -> None:
    """bfloat16 training on a CPU whose oneDNN has no bf16 convolution (AVX2 only) is refused:
    torch runs its reference convolution there, about 12x slower than fp32 (a 64 px step of 32
    images: 51 s against 4.1 s on 2 AVX2 cores), and the loss drifts up; a user believes it hung."""
    precision = str(OmegaConf.select(cfg, "trainer.precision") or "")
    accelerator = OmegaConf.select(cfg, "trainer.accelerator") or "auto"
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not cuda_available())
    if precision in BF16_PRECISIONS and on_cpu and not onednn_bf16():
        import torch

        raise ConfigError(
            f"trainer.precision={precision} on this CPU (torch CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, no bfloat16 convolution in oneDNN): torch "
            "would fall back to its reference convolution, about 12x slower than fp32. Use "
            "trainer.precision=32-true (the CPU default), or a CPU with AVX-512 or AMX."
        )


def note_native_size(cfg: DictConfig) -> str | None:
    """One line when the backbone's weights were trained at another input size than
    ``data.image_size`` (TorchXRayVision's at 512 px): the run works, but not as published."""
    native = OmegaConf.select(cfg, "backbone.native_size")
    size = OmegaConf.select(cfg, "data.image_size")
    if not native or not size or native == size:
        return None
    note = (
        f"backbone={OmegaConf.select(cfg, 'backbone.key')} was trained at {native} px and this "
        f"run feeds it {size} px: add data.image_size={native} to use it as its authors did."
    )
    log.warning(note)
    return note


def check_training(cfg: DictConfig) -> None:
    check_accelerator(cfg)
    check_precision(cfg)
    note_native_size(cfg)
    check_option(cfg, "model.dropout", fraction(high_open=True), "give a value in [0, 1)")
    check_option(cfg, "model.label_smoothing", fraction(high_open=True), "give a value in [0, 1)")
    check_option(cfg, "optimizer.lr", lambda v: float(v) > 0, "give a learning rate > 0")
    check_option(
        cfg, "trainer.max_epochs", lambda v: v == -1 or integer(1)(v), "give an integer >= 1"
    )
