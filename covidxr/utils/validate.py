"""Option checks that run before any data is read or any model is built.

Each message names the option as the user types it, its value, and what would work. The options
that pick and split the images are checked by ``covidxr.data.spec.SplitSpec``, where they live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from covidxr.utils.errors import ConfigError

#: ResNet50 downsamples 32 times: smaller inputs leave no spatial extent for its last stage.
MIN_IMAGE_SIZE = 32
#: ``resume``: never, or ``auto`` (a job started again in its run folder continues from last.ckpt)
RESUME_CHOICES = ("never", "auto")


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], wanted: str) -> None:
    node, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, node) if node else cfg
    if parent is None or leaf not in parent:
        return
    value = parent[leaf]
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"{key}={value}: {wanted}.")


def _integer(minimum: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _fraction(low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        v = float(v)
        return (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)

    return ok


def check_loader(cfg: DictConfig) -> None:
    """``data.*`` options of the loaders (the split's are ``SplitSpec``'s)."""
    _check(cfg, "data.image_size", _integer(MIN_IMAGE_SIZE), f"give an integer >= {MIN_IMAGE_SIZE}")
    _check(cfg, "data.batch_size", _integer(1), "give an integer >= 1")
    _check(cfg, "data.num_workers", _integer(0), "give an integer >= 0")


def check_required(cfg: DictConfig) -> None:
    """Options marked ``???`` in the configs must be given on the command line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        given = " ".join(f"{key}=..." for key in missing)
        raise ConfigError(f"{', '.join(missing)} must be given: add {given}.")


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer on a machine without one fails here, not after the data is indexed."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda") and not torch_cuda_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible on this machine. Use "
            "trainer=cpu (or trainer=default, which picks what is there)."
        )


def check_train(cfg: DictConfig) -> None:
    """Every option ``covidxr-train`` can check before it reads data or builds a model."""
    check_required(cfg)
    if not cfg.get("train", True) and not cfg.get("ckpt_path"):
        raise ConfigError(
            "train=false needs ckpt_path=<run>/checkpoints/best.ckpt: the checkpoint to test."
        )
    check_loader(cfg)
    check_accelerator(cfg)
    _check(cfg, "resume", lambda v: v in RESUME_CHOICES, f"choose one of {list(RESUME_CHOICES)}")
    _check(cfg, "model.dropout", _fraction(high_open=True), "give a value in [0, 1)")
    _check(cfg, "model.label_smoothing", _fraction(high_open=True), "give a value in [0, 1)")
    _check(cfg, "optimizer.lr", lambda v: float(v) > 0, "give a learning rate > 0")
    _check(cfg, "trainer.max_epochs", lambda v: v == -1 or _integer(1)(v), "give an integer >= 1")


def check_eval(cfg: DictConfig) -> None:
    check_required(cfg)
    check_accelerator(cfg)
    _check(
        cfg,
        "target_sensitivity",
        lambda v: v is None or _fraction(low_open=True)(v),
        "give a sensitivity in (0, 1], e.g. 0.95",
    )
    _check(cfg, "cam_samples", _integer(0), "give an integer >= 0")
    _check(
        cfg,
        "ensemble_top_k",
        lambda v: v is None or _integer(1)(v),
        "give an integer >= 1, or null for every member",
    )
    if not cfg.get("ckpt_path") and not cfg.get("ensemble"):
        raise ConfigError(
            "covidxr-eval needs ckpt_path=<run>/checkpoints/best.ckpt, or ensemble=[ckpt, ...] "
            "(or a multirun folder)."
        )


def check_predict(cfg: DictConfig) -> None:
    check_required(cfg)
    cuda = torch_cuda_available()
    where = "cpu or cuda" if cuda else "cpu (no CUDA GPU is visible for cuda)"
    usable = ("cpu", "cuda") if cuda else ("cpu",)
    _check(cfg, "device", lambda v: str(v).split(":")[0] in usable, f"give {where}")
    _check(cfg, "precision", lambda v: v in ("auto", "fp32", "bf16"), "give auto, fp32 or bf16")
    _check(
        cfg,
        "threshold",
        lambda v: v is None or _fraction()(v),
        "give a probability in [0, 1] for p(positive class), or null",
    )
    _check(cfg, "batch_size", _integer(1), "give an integer >= 1")
    _check(cfg, "num_workers", _integer(0), "give an integer >= 0")


def check_export(cfg: DictConfig) -> None:
    check_required(cfg)
    _check(cfg, "quantize", lambda v: v in (None, "int8"), "give int8, or null for fp32")
    _check(cfg, "calib_images", _integer(1), "give an integer >= 1 (a few hundred)")
    _check(cfg, "max_auroc_drop", _fraction(), "give an AUROC drop from 0 to 1, e.g. 0.005")
    _check(cfg, "min_agreement", _fraction(), "give a share of labels from 0 to 1, e.g. 0.99")
