"""``covidxr-eval``: test a checkpoint on the test split its training run recorded.

    covidxr-eval ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt
    covidxr-eval ckpt_path=... data.root=/new/place/of/the/dataset split_file=other_split.csv

The model brings its preprocessing and the checkpoint its data settings (dataset, classes,
split), so the numbers equal the training run's test numbers; ``metrics.json`` lands in this
eval's run folder. ``external=FOLDER`` also scores every image of another dataset (any layout,
classes matched by name) as ``external/...`` metrics, beside the internal ones.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
from pathlib import Path

import cv2
import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from covidxr.data.datamodule import SPLIT_FILE, RadiographyDataModule
from covidxr.data.decode import read_gray
from covidxr.data.occlusion import Occluder, mask_path
from covidxr.data.transforms import build_transform
from covidxr.inference.gradcam import cam_grid, energy_share, grad_cam
from covidxr.inference.predictors import ExportedClassifier
from covidxr.inference.preprocessing import THRESHOLD_KEY
from covidxr.models.module import XRayClassifier
from covidxr.paths import CONF_DIR, checkpoint_run_dir
from covidxr.reporting.run import METRICS_FILE, external_test, print_metrics, test_and_report
from covidxr.utils.config import register_configs
from covidxr.utils.errors import ConfigError, MissingFileError, report_user_errors
from covidxr.utils.io import atomic_path, write_json
from covidxr.utils.runner import build_trainer, output_dir, task_wrapper
from covidxr.utils.validate import check_eval
from covidxr.weights.adapters import load_checkpoint_file

log = logging.getLogger(__name__)


def run_split_file(ckpt_path: Path) -> Path:
    """``<run>/split.csv`` for ``<run>/checkpoints/x.ckpt``, or a clear error."""
    split = checkpoint_run_dir(ckpt_path) / SPLIT_FILE
    if not split.is_file():
        raise MissingFileError(
            f"No {SPLIT_FILE} found for {ckpt_path} (looked at {split}). "
            "Pass split_file=<the training run's split.csv>."
        )
    return split


def datamodule_from_checkpoint(ckpt_path: Path, cfg: DictConfig) -> L.LightningDataModule:
    """Rebuild the training run's data module for testing, with ``cfg.data`` overrides.

    Settings the data module no longer takes (mean/std, which moved to the model in 0.2) are
    left out, so checkpoints of earlier versions still evaluate.
    """
    checkpoint = load_checkpoint_file(ckpt_path)
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    if not hparams:
        raise ConfigError(f"{ckpt_path} records no data settings: was it written by covidxr-train?")
    name = checkpoint.get("datamodule_class", "")
    module_name, _, class_name = name.rpartition(".")
    datamodule_class = (
        getattr(importlib.import_module(module_name), class_name)
        if module_name
        else RadiographyDataModule
    )
    accepted = {
        p
        for kind in datamodule_class.__mro__
        if issubclass(kind, RadiographyDataModule)
        for p in inspect.signature(kind.__init__).parameters
    }
    hparams = {k: v for k, v in hparams.items() if k in accepted}
    hparams.update({k: v for k, v in cfg.data.items() if v is not None})
    hparams["split_file"] = str(cfg.split_file or run_split_file(ckpt_path))
    return datamodule_class(**hparams, output_dir=output_dir())


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    check_eval(cfg)
    ckpt_path = Path(cfg.ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    model = XRayClassifier.from_checkpoint(ckpt_path)
    datamodule = datamodule_from_checkpoint(ckpt_path, cfg)
    trainer = build_trainer(cfg)
    metrics = test_and_report(trainer, model, datamodule, None, output_dir())
    compare_with_training_run(metrics, ckpt_path, strict=cfg.get("strict", False))
    extra: dict[str, float] = {}
    if cfg.get("external"):
        external = RadiographyDataModule.external(
            cfg.external,
            model.class_names,
            model.preprocessing.image_size,
            batch_size=datamodule.hparams.batch_size,
            num_workers=datamodule.hparams.num_workers,
        )
        extra |= external_test(trainer, model, external, output_dir())
    if cfg.get("cam_samples"):
        grid, energy = write_cam_grid(
            trainer, model, datamodule, int(cfg.cam_samples), output_dir()
        )
        log_image_to_wandb(trainer, "test/grad_cam", grid)
        extra |= energy
    if extra:  # metrics.json and the table once more, with what followed the test
        metrics |= extra
        write_json(output_dir() / METRICS_FILE, dict(sorted(metrics.items())))
        print_metrics(metrics, output_dir())
    if cfg.get("target_sensitivity"):
        metrics["val/threshold"] = save_threshold(
            trainer,
            model,
            datamodule,
            float(cfg.target_sensitivity),
            ckpt_path,
            output_dir() / f"{ckpt_path.stem}.threshold.ckpt",
        )
    return metrics


def log_image_to_wandb(trainer: L.Trainer, key: str, path: Path) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(str(path))})


def predict_split(
    trainer: L.Trainer, model: XRayClassifier, datamodule: RadiographyDataModule, split: str
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Files, true labels and class probabilities of ``split``, predicted through the Trainer."""
    dataset = datamodule.datasets[split]
    batches = trainer.predict(model, dataloaders=datamodule.eval_loader(split))
    files = [Path(dataset.root) / s.path for s in dataset.samples]
    labels = np.array([s.label for s in dataset.samples])
    return files, labels, torch.cat(batches).numpy()


def cam_regions(datamodule, files: list[Path], size: int) -> tuple[str, np.ndarray]:
    """Where a chest X-ray model should look: the lung masks when the dataset ships them, else
    the central region (the frame ``data.occlude=center`` keeps, removed)."""
    root = Path(datamodule.datasets["test"].root)
    masks = [mask_path(root, f.relative_to(root).as_posix()) for f in files]
    if all(m.is_file() for m in masks):
        regions = [
            cv2.resize(read_gray(m), (size, size), interpolation=cv2.INTER_NEAREST) > 127
            for m in masks
        ]
        return "lungs", np.stack(regions).astype(np.float32)
    centre = Occluder("center")(np.ones((size, size), np.uint8), "")
    return "center", np.repeat((1 - centre)[None].astype(np.float32), len(files), axis=0)


def write_cam_grid(
    trainer, model, datamodule, samples: int, folder: Path
) -> tuple[Path, dict[str, float]]:
    """Grad-CAM of up to ``samples`` test images, half correct and half wrong where possible,
    and the share of CAM energy inside the lungs (or the centre) per true class."""
    files, labels, probs = predict_split(trainer, model, datamodule, "test")
    prep = model.preprocessing
    predicted = prep.decide(probs)
    wrong = [i for i in range(len(files)) if predicted[i] != labels[i]]
    right = [i for i in range(len(files)) if predicted[i] == labels[i]]
    take_wrong = wrong[: max(samples // 2, samples - len(right))]
    chosen = take_wrong + right[: samples - len(take_wrong)]
    transform = build_transform(prep.image_size)
    images = torch.stack([transform(image=read_gray(files[i]))["image"] for i in chosen])
    classifier = ExportedClassifier(model, prep).eval().cpu()
    maps = grad_cam(classifier, images, torch.as_tensor(predicted[chosen]))
    names = prep.class_names
    titles = [
        f"{files[i].name}\ntrue {names[labels[i]]}, predicted {names[predicted[i]]}" for i in chosen
    ]
    greys = [images[k, 0].numpy() for k in range(len(chosen))]
    ok = [predicted[i] == labels[i] for i in chosen]
    path = cam_grid(folder / "cam_grid.png", greys, maps, titles, ok)
    log.info(
        "Wrote Grad-CAM of %d test images (%d wrong) to %s", len(chosen), len(take_wrong), path
    )
    region, masks = cam_regions(datamodule, [files[i] for i in chosen], prep.image_size)
    shares = energy_share(maps, masks)
    chosen_labels = labels[chosen]
    energy = {f"test/cam_{region}_share": float(np.nanmean(shares))}
    for label, name in enumerate(names):
        if (chosen_labels == label).any():
            energy[f"test/cam_{region}_share/{name}"] = float(
                np.nanmean(shares[chosen_labels == label])
            )
    return path, energy


def save_threshold(trainer, model, datamodule, target: float, ckpt_path: Path, path: Path) -> float:
    """The highest threshold whose validation sensitivity reaches ``target``, stored with the
    checkpoint in a new file ``path`` (the original file is left as it is)."""
    prep = model.preprocessing
    if len(prep.class_names) != 2:
        raise ConfigError("target_sensitivity needs a two-class model.")
    _, labels, probs = predict_split(trainer, model, datamodule, "val")
    scores = probs[:, prep.positive_index]
    positives = np.sort(scores[labels == prep.positive_index])[::-1]
    if len(positives) == 0:
        raise ConfigError("The validation split has no positive case to set a threshold on.")
    needed = max(1, math.ceil(target * len(positives)))
    threshold = float(positives[needed - 1])
    checkpoint = load_checkpoint_file(ckpt_path)
    with atomic_path(path) as tmp:
        torch.save({**checkpoint, THRESHOLD_KEY: threshold}, tmp)
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
        raise ConfigError(f"strict=true: test metrics differ from {recorded_path}: {message}")
    log.warning(
        "Test metrics differ from %s (other data or checkpoint?): %s", recorded_path, message
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


register_configs()
if __name__ == "__main__":
    main()
