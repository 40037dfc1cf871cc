"""Checks of ``covidxr-eval``'s options."""

from __future__ import annotations

from omegaconf import DictConfig

from covidxr.models.options import check_accelerator
from covidxr.utils.errors import ConfigError
from covidxr.utils.validate import check_option, check_required, fraction, integer


def check_eval(cfg: DictConfig) -> None:
    check_required(cfg)
    check_accelerator(cfg)
    check_option(
        cfg,
        "target_sensitivity",
        lambda v: v is None or fraction(low_open=True)(v),
        "give a sensitivity in (0, 1], e.g. 0.95",
    )
    check_option(cfg, "cam_samples", integer(0), "give an integer >= 0")
    check_option(
        cfg,
        "ensemble_top_k",
        lambda v: v is None or integer(1)(v),
        "give an integer >= 1, or null for every member",
    )
    if not cfg.get("ckpt_path") and not cfg.get("ensemble"):
        raise ConfigError(
            "covidxr-eval needs ckpt_path=<run>/checkpoints/best.ckpt, or ensemble=[ckpt, ...] "
            "(or a multirun folder)."
        )
