"""Checks of the loaders' ``data.*`` options (the split's are ``SplitSpec``'s)."""

from __future__ import annotations

from omegaconf import DictConfig

from covidxr.utils.validate import check_option, integer

#: ResNet50 downsamples 32 times: smaller inputs leave no spatial extent for its last stage.
MIN_IMAGE_SIZE = 32


def check_loader(cfg: DictConfig) -> None:
    check_option(
        cfg, "data.image_size", integer(MIN_IMAGE_SIZE), f"give an integer >= {MIN_IMAGE_SIZE}"
    )
    check_option(cfg, "data.batch_size", integer(1), "give an integer >= 1")
    check_option(cfg, "data.num_workers", integer(0), "give an integer >= 0")
