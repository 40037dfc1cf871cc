"""Checks of the model's, optimizer's and trainer's options, before any data is read."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

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
    note_native_size(cfg)
    check_option(cfg, "model.dropout", fraction(high_open=True), "give a value in [0, 1)")
    check_option(cfg, "model.label_smoothing", fraction(high_open=True), "give a value in [0, 1)")
    check_option(cfg, "optimizer.lr", lambda v: float(v) > 0, "give a learning rate > 0")
    check_option(
        cfg, "trainer.max_epochs", lambda v: v == -1 or integer(1)(v), "give an integer >= 1"
    )
