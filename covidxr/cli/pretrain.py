"""``covidxr-pretrain``: self-supervised pretraining of a ResNet50 trunk on unlabeled X-rays.

covidxr-pretrain                                    # MoCo v2, random init, synthetic phantoms
covidxr-pretrain data.root=<X-rays> exclude_split=<run>/split.csv name=xray_moco
covidxr-pretrain ssl=byol backbone=imagenet         # BYOL, continued from ImageNet weights
covidxr-train backbone=local:xray_moco              # fine-tune from the trunk it made

The trunk is written to ``<run>/trunk.pth`` with its passport ``<run>/trunk.json`` and installed
in the weights cache as ``local:<name>``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from covidxr.cli import hydra_app, register_configs
from covidxr.data.phantoms.synthetic import ensure_phantoms
from covidxr.models.options import check_accelerator, check_precision
from covidxr.pretraining.data import UnlabeledDataModule, list_hash
from covidxr.pretraining.methods import Method
from covidxr.pretraining.module import SelfSupervised
from covidxr.pretraining.views import COLOUR_ONLY
from covidxr.reporting.run import to_floats
from covidxr.run_folder import RunFolder
from covidxr.utils.env import machine_record
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_path, read_json, write_json
from covidxr.utils.runner import (
    build_trainer,
    check_resume,
    claim_this_folder,
    fit_or_stop,
    log_hyperparameters,
    output_dir,
    resume_automatically,
    task_wrapper,
)
from covidxr.weights.local import check_free_name, check_name, find_spec
from covidxr.weights.store import file_digests, install_local, read_lock

log = logging.getLogger(__name__)
#: Where pretraining looks when no data.root is given: the phantoms covidxr-train's default uses.
PHANTOMS = "phantoms-224px-100-seed0"


def colour_settings(node: Any, where: str = "ssl.views") -> list[str]:
    """Settings of the views that jitter colour (saturation, hue, random grey): not for X-rays."""
    found = []
    if isinstance(node, DictConfig):
        for key, value in node.items():
            if key in COLOUR_ONLY and value:
                found.append(f"{where}.{key}={value}")
            found += colour_settings(value, f"{where}.{key}")
    return found


def check_pretrain(cfg: DictConfig) -> None:
    """Every option that can be checked before any image is read."""
    check_resume(cfg)
    check_accelerator(cfg)
    check_precision(cfg)
    if cfg.get("name") is not None:
        check_name(str(cfg.name))
    colour = colour_settings(cfg.ssl.views)
    if colour:
        raise ConfigError(
            f"{colour[0]}: colour jitter means nothing on grey X-rays (it only adds noise to the "
            "views): set it to 0; exposure jitter is xray_views.cj_bright and cj_contrast."
        )


def start_record(backbone: DictConfig) -> dict[str, Any]:
    """The start weight as the passport records it, and the licence the trunk inherits."""
    spec = find_spec(str(backbone.key))
    sha256 = read_lock().get(spec.key, {}).get("sha256")
    if backbone.get("path"):
        sha256 = file_digests(Path(str(backbone.path)))["sha256"]
    if not spec.loads_file:
        licence = "yours: pretrained from random init on your images (their own terms apply)"
    else:
        licence = f"derived from {spec.key}, whose terms apply: {spec.licence}"
    return {"start_weight": spec.key, "start_sha256": sha256, "licence": licence}


#: A final loss within this share of the method's uninformative loss: the trunk learned nothing.
COLLAPSE_MARGIN = 0.01


def collapsed(method: Method, loss: float | None, name: str) -> bool:
    """Whether pretraining ended where an embedding tells no image from another; says so."""
    chance = method.uninformative_loss()
    if chance is None or loss is None or loss < (1 - COLLAPSE_MARGIN) * chance:
        return False
    log.warning(
        "train/loss ended at %.3f, the %.3f of an embedding that tells no image from another: "
        "local:%s collapsed and learned nothing (its passport says collapsed: true). Pretrain on "
        "more images or for more epochs, with a larger data.batch_size, or from "
        "backbone=imagenet before fine-tuning from it.",
        loss,
        chance,
        name,
    )
    return True


def write_trunk(
    run: RunFolder, model: SelfSupervised, data: UnlabeledDataModule, trainer: L.Trainer,
    cfg: DictConfig, name: str,
) -> None:  # fmt: skip
    """``trunk.pth`` and its passport, each written whole or not at all."""
    with atomic_path(run.trunk) as tmp:
        torch.save(model.trunk_state(), tmp)
    metrics = to_floats(trainer.callback_metrics)
    passport = {
        "name": name,
        "method": model.method.name,
        "method_settings": model.method.settings(),
        "views": OmegaConf.to_container(cfg.xray_views, resolve=True),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "images": len(data.files),
        "images_sha256": list_hash(data.root, data.files),
        "excluded_images": data.excluded,
        "exclude_split": None if cfg.exclude_split is None else str(cfg.exclude_split),
        "input_size": int(cfg.data.image_size),
        "mean": list(cfg.backbone.mean),
        "std": list(cfg.backbone.std),
        **start_record(cfg.backbone),
        "knn_acc": metrics.get("val/knn_acc"),
        "collapsed": collapsed(model.method, metrics.get("train/loss"), name),
        "sha256": file_digests(run.trunk)["sha256"],
        "run": str(run.path),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(),
    }
    write_json(run.passport, passport)
    write_json(run.metrics, metrics)


def build_data(cfg: DictConfig) -> UnlabeledDataModule:
    """The images to learn from, listed and checked; the phantoms when no data.root is given."""
    if cfg.data.root is None and cfg.data.manifest is None:
        phantoms = ensure_phantoms(Path(cfg.paths.data_dir) / PHANTOMS)
        log.info("No data.root: pretraining on the synthetic phantoms in %s", phantoms)
        with open_dict(cfg):
            cfg.data.root = str(phantoms)
    datamodule: UnlabeledDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


@task_wrapper
def pretrain(cfg: DictConfig) -> dict[str, float]:
    """Pretrain, write the trunk and its passport, install it as ``local:<name>``."""
    check_pretrain(cfg)
    claim_this_folder(cfg)
    run = RunFolder(output_dir())
    if cfg.get("seed") is not None:  # before the method: its heads and queue start random
        L.seed_everything(cfg.seed, workers=True)
    method: Method = instantiate(cfg.ssl.method)
    name = str(cfg.name or f"{method.name}-{run.path.name}")
    check_free_name(name, run.path, bool(cfg.replace_weight))
    if cfg.resume == "auto" and run.passport.is_file() and run.metrics.is_file():
        log.info("resume=auto: %s finished already", run.path)
    else:
        resume_automatically(cfg)
        datamodule = build_data(cfg)
        method.check(len(datamodule.files), int(cfg.data.batch_size))  # before any compute
        model: SelfSupervised = instantiate(cfg.model, method=method, _convert_="object")
        trainer = build_trainer(cfg)
        log_hyperparameters(cfg, model, trainer)
        fit_or_stop(trainer, model, datamodule, cfg.get("ckpt_path"))
        if not trainer.is_global_zero:
            return to_floats(trainer.callback_metrics)
        write_trunk(run, model, datamodule, trainer, cfg, name)
    install_local(name, run.trunk, bool(cfg.replace_weight))
    log.info("Pretrained trunk: %s; fine-tune from it with backbone=local:%s", run.trunk, name)
    return read_json(run.metrics)


@hydra_app("pretrain")
def main(cfg: DictConfig) -> None:
    pretrain(cfg)


register_configs()
if __name__ == "__main__":
    main()
