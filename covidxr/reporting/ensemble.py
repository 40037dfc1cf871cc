"""Ensembles: the mean class probabilities of several checkpoints on one shared test split.

``covidxr-eval ensemble=[a.ckpt,b.ckpt]`` (or a multirun folder: every ``best.ckpt`` under it;
``ensemble_top_k=K``: the K with the best ``val/acc``) scores every member on the test split they
all share, averages their probabilities image by image, and reports the ensemble as any run:
metrics, intervals, predictions, and DeLong's test against its best member.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from covidxr.data.loading.datamodule import RadiographyDataModule, run_split_file
from covidxr.data.splitting.splits import read_split_rows
from covidxr.models.metrics import point_metrics
from covidxr.models.module import XRayClassifier
from covidxr.models.predictions import Predictions
from covidxr.models.tta import View
from covidxr.reporting.paired import delong
from covidxr.reporting.run import report_record
from covidxr.run_folder import RunFolder
from covidxr.utils.errors import ConfigError, MissingFileError
from covidxr.utils.io import atomic_write

log = logging.getLogger(__name__)


def _val_acc(ckpt: Path) -> float:
    metrics = RunFolder.of_checkpoint(ckpt).metrics
    if not metrics.is_file():
        return -math.inf
    value = json.loads(metrics.read_text()).get("val/acc", -math.inf)
    return -math.inf if value is None or math.isnan(value) else float(value)


def ensemble_members(entries: Sequence[str | os.PathLike], top_k: int | None = None) -> list[Path]:
    """Checkpoints named, or every ``checkpoints/best.ckpt`` under the folders named; with
    ``top_k``, the k whose runs reached the best ``val/acc``."""
    found: list[Path] = []
    for entry in [entries] if isinstance(entries, str | os.PathLike) else entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found += sorted(path.rglob(RunFolder(Path()).best_checkpoint.as_posix()))
        elif path.is_file():
            found.append(path)
        else:
            raise MissingFileError(f"ensemble: {path} is neither a checkpoint nor a folder.")
    members = list(dict.fromkeys(p.resolve() for p in found))
    if top_k is not None:
        members = sorted(members, key=_val_acc, reverse=True)[:top_k]
    if len(members) < 2:
        raise ConfigError(
            f"ensemble={list(map(str, entries))} gives {len(members)} checkpoint(s): an ensemble "
            "needs two or more (a multirun folder holds one best.ckpt per job)."
        )
    return members


def shared_test_split(members: Sequence[Path]) -> Path:
    """The ``split.csv`` every member's run tested on; refuse members tested on other images."""

    def test_images(ckpt: Path) -> list[str]:
        rows = read_split_rows(run_split_file(ckpt), "ensemble")
        return sorted(row.path for row in rows if row.split == "test")

    first = test_images(members[0])
    for member in members[1:]:
        if test_images(member) != first:
            raise ConfigError(
                f"ensemble: {member} was tested on other images than {members[0]} (another seed "
                "or data options): ensemble runs of one split, e.g. the jobs of one seed."
            )
    return run_split_file(members[0])


@torch.no_grad()
def member_records(
    models: Sequence[XRayClassifier],
    loader_at: Callable[[int], DataLoader],
    tta: Sequence[View] = (),
) -> list[Predictions]:
    """Each member's record on one split, with its own preprocessing (image size, normalisation)
    and test-time views; the split is decoded once per image size (``loader_at(size)``) and each
    batch scored by every member of that size."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for model in models:
        model.eval().to(device)
        model.tta = tuple(tta)
    probs: list[list[torch.Tensor]] = [[] for _ in models]
    sizes = sorted({model.preprocessing.image_size for model in models})
    if len(sizes) > 1:
        log.info("Ensemble members take %s px: each is scored at its own size", sizes)
    indices: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    for size in sizes:
        members = [i for i, m in enumerate(models) if m.preprocessing.image_size == size]
        indices, targets = [], []  # the same for every size
        for images, target, index in loader_at(size):
            images = images.to(device)
            for i in members:
                model = models[i]
                probs[i].append(model.probabilities(model.normalize(images)).cpu())
            targets.append(target)
            indices.append(index)
    order = torch.cat(indices).argsort()
    return [
        Predictions(
            indices=torch.cat(indices)[order].numpy(),
            targets=torch.cat(targets)[order].numpy(),
            probs=torch.cat(member)[order].double().numpy(),
        )
        for member in probs
    ]


def ensemble_test(
    members: Sequence[Path],
    datamodule: RadiographyDataModule,
    output_dir: str | os.PathLike,
    tta: Sequence[View] = (),
) -> dict[str, float]:
    """Score the members, average them, and write the ensemble's report into ``output_dir``."""
    output_dir = Path(output_dir)
    models = [XRayClassifier.from_checkpoint(m) for m in members]
    names = models[0].class_names
    for member, model in zip(members, models, strict=True):
        if model.class_names != names:
            raise ConfigError(
                f"ensemble: {member} predicts {model.class_names}, {members[0]} {names}: "
                "members must share their classes."
            )
    records = member_records(models, lambda size: datamodule.eval_loader("test", size), tta)
    positive = models[0].positive
    record = Predictions(
        records[0].indices, records[0].targets, np.mean([r.probs for r in records], axis=0)
    )

    def metrics_of(r: Predictions) -> dict[str, float]:
        probs, targets = torch.from_numpy(r.probs), torch.from_numpy(r.targets)
        return point_metrics(probs, targets, names, positive, "test")

    member_metrics = [metrics_of(r) for r in records]
    best = max(
        range(len(members)),
        key=lambda i: (
            -math.inf
            if math.isnan(member_metrics[i]["test/auroc"])
            else member_metrics[i]["test/auroc"]
        ),
    )
    versus = delong(
        record.targets == positive, record.probs[:, positive], records[best].probs[:, positive]
    )
    with atomic_write(RunFolder(Path(output_dir)).ensemble_members) as fh:
        writer = csv.writer(fh)
        writer.writerow(["checkpoint", "test_acc", "test_auroc", "best"])
        for i, (member, values) in enumerate(zip(members, member_metrics, strict=True)):
            writer.writerow([member, values["test/acc"], values["test/auroc"], i == best])
    samples = datamodule.datasets["test"].samples
    metrics = report_record(
        record,
        models[0],
        samples,
        output_dir,
        {
            "test/auroc_minus_best_member": versus.difference,
            "test/auroc_minus_best_member_ci_low": versus.ci_low,
            "test/auroc_minus_best_member_ci_high": versus.ci_high,
            "test/auroc_vs_best_member_p": versus.p_value,
            "ensemble/members": float(len(members)),
        },
    )
    log.info(
        "Ensemble of %d: AUROC %+.4f against its best member %s (DeLong p = %.3g)",
        len(members),
        versus.difference,
        members[best],
        versus.p_value,
    )
    return metrics
