"""What a W&B run shows after testing: confusion matrix, ROC and PR curves, per-class metrics,
and a table of test predictions with their images, mistakes first."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import cv2
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_precision_recall_curve,
    multiclass_recall,
    multiclass_roc,
    multiclass_specificity,
)

from covidxr.data.decode import read_gray
from covidxr.reporting.run import write_confusion_matrix

log = logging.getLogger(__name__)


def per_class_rows(probs: torch.Tensor, targets: torch.Tensor, names: list[str]) -> list[list]:
    """precision, sensitivity, specificity, F1 and support per class (torchmetrics, one vs rest)."""
    n, predicted = len(names), probs.argmax(1)
    columns = [
        function(predicted, targets, n, average=None).tolist()
        for function in (
            multiclass_precision,
            multiclass_recall,
            multiclass_specificity,
            multiclass_f1_score,
        )
    ]
    support = torch.bincount(targets, minlength=n).tolist()
    return [
        [name, *values, count]
        for name, *values, count in zip(names, *columns, support, strict=True)
    ]


def curves(xs, ys, names: list[str], title: str, xname: str):
    """One W&B line per class."""
    import wandb

    return wandb.plot.line_series(
        xs=[x.tolist() for x in xs],
        ys=[y.tolist() for y in ys],
        keys=names,
        title=title,
        xname=xname,
    )


class WandbTestReport(Callback):
    """Collects test predictions and logs the plots and tables to every ``WandbLogger``.

    Under DDP every rank's predictions are gathered with their dataset indices (each rank holds
    the samples ``rank, rank + W, ...`` of the unpadded test sampler), so rank 0 pairs every
    prediction with its own file.
    """

    def __init__(self, max_table_rows: int = 256, thumbnail: int = 128) -> None:
        self.max_table_rows, self.thumbnail = max_table_rows, thumbnail
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.probs, self.targets = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.probs.append(outputs["probs"].detach().cpu())
        self.targets.append(outputs["target"].detach().cpu())

    @staticmethod
    def gather(
        trainer: Trainer, probs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every rank's predictions, ordered by dataset index: ``(indices, probs, targets)``."""
        loader = trainer.test_dataloaders
        loader = loader[0] if isinstance(loader, list | tuple) else loader
        sampler = getattr(loader, "sampler", None)
        indices = torch.as_tensor(
            list(getattr(sampler, "indices", range(len(probs))))[: len(probs)], dtype=torch.long
        )
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            shards: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (indices, probs, targets))
            indices, probs, targets = (torch.cat(parts) for parts in zip(*shards, strict=True))
        order = indices.argsort()
        return indices[order], probs[order], targets[order]

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the module has computed its test metrics and confusion matrix."""
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not self.probs:
            return
        indices, probs, targets = self.gather(
            trainer, torch.cat(self.probs), torch.cat(self.targets)
        )
        if not trainer.is_global_zero:
            return
        import wandb

        names = pl_module.class_names
        matrix = pl_module.confusion_matrices["test"]
        fpr, tpr, _ = multiclass_roc(probs, targets, len(names), thresholds=200)
        precision, recall, _ = multiclass_precision_recall_curve(
            probs, targets, len(names), thresholds=200
        )
        payload = {
            "test/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=targets.tolist(), preds=probs.argmax(1).tolist(), class_names=names
            ),
            "test/roc": curves(fpr, tpr, names, "ROC (one class vs rest)", "false positive rate"),
            "test/pr": curves(
                recall, precision, names, "Precision-recall (one class vs rest)", "recall"
            ),
            "test/per_class": wandb.Table(
                columns=["class", "precision", "sensitivity", "specificity", "f1", "support"],
                data=per_class_rows(probs, targets, names),
            ),
            "test/predictions": self._predictions_table(trainer, indices, probs, targets, names),
        }
        with tempfile.TemporaryDirectory() as tmp:
            _, png = write_confusion_matrix(tmp, matrix, names, "confusion_matrix_test")
            payload["test/confusion_matrix_image"] = wandb.Image(str(png))
            for logger in loggers:
                logger.experiment.log(payload)

    def _predictions_table(self, trainer: Trainer, indices, probs, targets, names: list[str]):
        import wandb

        dataset = trainer.datamodule.datasets["test"] if trainer.datamodule else None
        columns = ["path", "image", "true", "predicted", "correct", *[f"p({n})" for n in names]]
        predicted = probs.argmax(1)
        confidence = probs.max(1).values
        # Mistakes first, the most confident mistakes at the top.
        order = sorted(
            range(len(targets)),
            key=lambda i: (bool(predicted[i] == targets[i]), -float(confidence[i])),
        )[: self.max_table_rows]
        rows = []
        for i in order:
            index = int(indices[i])
            path = dataset.samples[index].path if dataset is not None else str(index)
            image = None
            if dataset is not None:
                pixels = read_gray(Path(dataset.root) / path)
                image = wandb.Image(cv2.resize(pixels, (self.thumbnail, self.thumbnail)))
            rows.append(
                [
                    path,
                    image,
                    names[int(targets[i])],
                    names[int(predicted[i])],
                    bool(predicted[i] == targets[i]),
                    *[round(float(p), 4) for p in probs[i]],
                ]
            )
        return wandb.Table(columns=columns, data=rows)
