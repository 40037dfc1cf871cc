"""Checks of ``covidxr-predict``'s and ``covidxr-export``'s options; the precisions and formats
are the table of forms' (``covidxr.inference.forms``)."""

from __future__ import annotations

from omegaconf import DictConfig

from covidxr.inference.forms import CHECKPOINT
from covidxr.inference.gate import GateLimits
from covidxr.utils.validate import (
    check_option,
    check_required,
    cuda_available,
    fraction,
    integer,
    one_of,
)


def check_predict(cfg: DictConfig) -> None:
    check_required(cfg)
    cuda = cuda_available()
    where = "cpu or cuda" if cuda else "cpu (no CUDA GPU is visible for cuda)"
    usable = ("cpu", "cuda") if cuda else ("cpu",)
    check_option(cfg, "device", lambda v: str(v).split(":")[0] in usable, f"give {where}")
    check_option(
        cfg,
        "precision",
        one_of(CHECKPOINT.precisions),
        f"give {', '.join(CHECKPOINT.precisions)}",
    )
    check_option(
        cfg,
        "threshold",
        lambda v: v is None or fraction()(v),
        "give a probability in [0, 1] for p(positive class), or null",
    )
    check_option(cfg, "batch_size", integer(1), "give an integer >= 1")
    check_option(cfg, "num_workers", integer(0), "give an integer >= 0")


def check_export(cfg: DictConfig) -> None:
    check_required(cfg)
    check_option(cfg, "calib_images", integer(1), "give an integer >= 1 (a few hundred)")
    default = GateLimits()
    for name, what in (
        ("max_auroc_change", "an AUROC change"),
        ("min_agreement", "a share of labels"),
        ("max_prob_change", "a probability change"),
    ):
        example = getattr(default, name)
        check_option(cfg, name, fraction(), f"give {what} from 0 to 1, e.g. {example}")
