"""``covidxr-eval``: test a checkpoint on the test split its training run recorded.

    covidxr-eval ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt
    covidxr-eval ckpt_path=... data.root=/new/place/of/the/dataset split_file=other_split.csv

The data settings (classes, image size, normalisation, dataset) come from the checkpoint, so the
numbers equal the training run's test numbers; ``metrics.json`` lands in this eval's run folder.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from covidxr import config as _config  # noqa: F401  (registers the ${uid:} resolver)
from covidxr.data.decode import read_gray
from covidxr.data.transforms import build_transform
from covidxr.evaluation import test_and_report
from covidxr.explain import cam_grid, grad_cam
from covidxr.inference import THRESHOLD_KEY, Preprocessing, TorchPredictor, batches
from covidxr.models.backbone import load_checkpoint_file
from covidxr.models.module import XRayClassifier
from covidxr.paths import CONF_DIR, checkpoint_run_dir
from covidxr.reporting import METRICS_FILE
from covidxr.runner import instantiate_loggers, logger_callbacks, output_dir, task_wrapper

log = logging.getLogger(__name__)
DEFAULT_DATAMODULE = "covidxr.data.datamodule.RadiographyDataModule"


def run_split_file(ckpt_path: Path) -> Path:
    """``<run>/split.csv`` for ``<run>/checkpoints/x.ckpt``, or a clear error."""
    split = checkpoint_run_dir(ckpt_path) / "split.csv"
    if not split.is_file():
        raise FileNotFoundError(
            f"No split.csv found for {ckpt_path} (looked at {split}). "
            "Pass split_file=<the training run's split.csv>."
        )
    return split


def datamodule_from_checkpoint(
    checkpoint: dict, ckpt_path: Path, cfg: DictConfig
) -> L.LightningDataModule:
    """Rebuild the training run's data module for testing, with ``cfg.data`` overrides."""
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    if not hparams:
        raise ValueError(f"{ckpt_path} records no data settings: was it written by covidxr-train?")
    module_name, _, class_name = checkpoint.get("datamodule_class", DEFAULT_DATAMODULE).rpartition(
        "."
    )
    datamodule_class = getattr(importlib.import_module(module_name), class_name)
    hparams.update({k: v for k, v in cfg.data.items() if v is not None})
    hparams["split_file"] = str(cfg.split_file or run_split_file(ckpt_path))
    return datamodule_class(**hparams, output_dir=output_dir())


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt_path = Path(cfg.ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    checkpoint = load_checkpoint_file(ckpt_path)
    datamodule = datamodule_from_checkpoint(checkpoint, ckpt_path, cfg)
    model = XRayClassifier.load_from_checkpoint(
        ckpt_path, map_location=torch.device("cpu"), pretrained=False, compile=False
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=logger_callbacks(loggers), logger=loggers or False
    )
    metrics = test_and_report(trainer, model, datamodule, None, output_dir())
    compare_with_training_run(metrics, ckpt_path, strict=cfg.get("strict", False))
    if cfg.get("cam_samples") or cfg.get("target_sensitivity"):
        predictor = TorchPredictor(model, Preprocessing.from_checkpoint(checkpoint))
        if cfg.get("cam_samples"):
            grid = write_cam_grid(predictor, datamodule, int(cfg.cam_samples), output_dir())
            log_image_to_wandb(trainer, "test/grad_cam", grid)
        if cfg.get("target_sensitivity"):
            metrics["val/threshold"] = save_threshold(
                predictor,
                datamodule,
                float(cfg.target_sensitivity),
                checkpoint,
                output_dir() / f"{ckpt_path.stem}.threshold.ckpt",
            )
    return metrics


def log_image_to_wandb(trainer: L.Trainer, key: str, path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(str(path))})


def split_files(datamodule: L.LightningDataModule, split: str) -> tuple[list[Path], np.ndarray]:
    dataset = datamodule.datasets[split]
    return [Path(dataset.root) / s.path for s in dataset.samples], np.array(
        [s.label for s in dataset.samples]
    )


def predict_split(predictor: TorchPredictor, files: list[Path]) -> np.ndarray:
    size = predictor.preprocessing.image_size
    return np.concatenate([predictor(images) for images, _, _ in batches(files, size)])


def write_cam_grid(predictor, datamodule, samples: int, folder: Path) -> Path:
    """Grad-CAM of up to ``samples`` test images, half correct and half wrong where possible."""
    files, labels = split_files(datamodule, "test")
    probs = predict_split(predictor, files)
    predicted = predictor.preprocessing.decide(probs)
    wrong = [i for i in range(len(files)) if predicted[i] != labels[i]]
    right = [i for i in range(len(files)) if predicted[i] == labels[i]]
    take_wrong = wrong[: max(samples // 2, samples - len(right))]
    chosen = take_wrong + right[: samples - len(take_wrong)]
    size = predictor.preprocessing.image_size
    images = torch.stack(
        [build_transform(size)(image=read_gray(files[i]))["image"] for i in chosen]
    )
    maps = grad_cam(predictor.module, images, torch.as_tensor(predicted[chosen]))
    names = predictor.preprocessing.class_names
    titles = [
        f"{files[i].name}\ntrue {names[labels[i]]}, predicted {names[predicted[i]]}" for i in chosen
    ]
    greys = [images[k, 0].numpy() for k in range(len(chosen))]
    ok = [predicted[i] == labels[i] for i in chosen]
    path = cam_grid(folder / "cam_grid.png", greys, maps, titles, ok)
    log.info(
        "Wrote Grad-CAM of %d test images (%d wrong) to %s", len(chosen), len(take_wrong), path
    )
    return path


def save_threshold(predictor, datamodule, target: float, checkpoint: dict, path: Path) -> float:
    """The highest threshold whose validation sensitivity reaches ``target``, stored with the
    ``checkpoint`` in a new file ``path`` (the original file is left as it is)."""
    prep = predictor.preprocessing
    if len(prep.class_names) != 2:
        raise ValueError("target_sensitivity needs a two-class model.")
    files, labels = split_files(datamodule, "val")
    scores = predict_split(predictor, files)[:, prep.positive_index]
    positives = np.sort(scores[labels == prep.positive_index])[::-1]
    if len(positives) == 0:
        raise ValueError("The validation split has no positive case to set a threshold on.")
    needed = max(1, math.ceil(target * len(positives)))
    threshold = float(positives[needed - 1])
    torch.save({**checkpoint, THRESHOLD_KEY: threshold}, path)
    log.info(
        "Threshold %.4f gives validation sensitivity >= %.3f; saved %s", threshold, target, path
    )
    return threshold


def compare_with_training_run(metrics: dict[str, float], ckpt_path: Path, strict: bool) -> None:
    """Say whether the test numbers equal those the training run recorded (``strict``: raise)."""
    recorded_path = checkpoint_run_dir(ckpt_path) / METRICS_FILE
    if not recorded_path.is_file():
        return
    recorded = json.loads(recorded_path.read_text())
    keys = sorted(k for k in recorded if k.startswith("test/") and k in metrics)
    differ = [
        k for k in keys if not math.isclose(recorded[k], metrics[k], rel_tol=1e-5, abs_tol=1e-6)
    ]
    if not differ:
        log.info("Test metrics equal the training run's (%s).", recorded_path)
        return
    message = "; ".join(f"{k}: run {recorded[k]:.6f}, now {metrics[k]:.6f}" for k in differ)
    if strict:
        raise RuntimeError(f"Test metrics differ from {recorded_path}: {message}")
    log.warning(
        "Test metrics differ from %s (other data or checkpoint?): %s", recorded_path, message
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
