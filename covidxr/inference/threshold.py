"""A decision threshold chosen on validation for a target sensitivity, stored with the model."""

from __future__ import annotations

import logging
import os

import lightning as L
import torch
from torchmetrics.functional.classification import binary_specificity_at_sensitivity

from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.models.module import XRayClassifier
from covidxr.models.preprocessing import THRESHOLD_KEY
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_path, read_checkpoint

log = logging.getLogger(__name__)


def threshold_for_sensitivity(scores: torch.Tensor, positive: torch.Tensor, target: float) -> float:
    """The highest threshold on ``scores`` whose sensitivity reaches ``target`` (which is also
    the most specific such threshold: torchmetrics' specificity at sensitivity)."""
    if not bool(positive.any()):
        raise ConfigError("The validation split has no positive case to set a threshold on.")
    _, threshold = binary_specificity_at_sensitivity(scores, positive.long(), target)
    return float(threshold)


def save_threshold(
    trainer: L.Trainer,
    model: XRayClassifier,
    datamodule: RadiographyDataModule,
    target: float,
    ckpt_path: str | os.PathLike,
    path: str | os.PathLike,
) -> float:
    """Choose the threshold on the validation split and store it with the checkpoint in a new
    file ``path`` (the original file is left as it is)."""
    prep = model.preprocessing
    if len(prep.class_names) != 2:
        raise ConfigError("target_sensitivity needs a two-class model.")
    probs = torch.cat(trainer.predict(model, dataloaders=datamodule.eval_loader("val")))
    labels = torch.tensor([s.label for s in datamodule.datasets["val"].samples])
    scores = probs[:, prep.positive_index]
    threshold = threshold_for_sensitivity(scores, labels == prep.positive_index, target)
    checkpoint = read_checkpoint(ckpt_path)
    with atomic_path(path) as tmp:
        torch.save({**checkpoint, THRESHOLD_KEY: threshold}, tmp)
    log.info(
        "Threshold %.4f gives validation sensitivity >= %.3f; saved %s", threshold, target, path
    )
    return threshold
