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

from covidxr.data.formats.decode import read_gray
from covidxr.reporting.run import write_confusion_matrix
from covidxr.run_folder import ReportFolder

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
    """Logs the test plots and tables to every ``WandbLogger``, from the model's record of test
    predictions (gathered across processes and sorted by dataset index: row ``i`` is image ``i``
    of the test split under any strategy)."""

    def __init__(self, max_table_rows: int = 256, thumbnail: int = 128) -> None:
        self.max_table_rows, self.thumbnail = max_table_rows, thumbnail

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the module has computed its test metrics, confusion matrix and record."""
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        record = getattr(pl_module, "test_predictions", None)
        if not loggers or record is None or not trainer.is_global_zero:
            return
        indices = torch.as_tensor(record.indices)
        probs = torch.as_tensor(record.probs, dtype=torch.float32)
        targets = torch.as_tensor(record.targets)
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
            _, png = write_confusion_matrix(Path(tmp) / "confusion_matrix", matrix, names)
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


def log_image(trainer: Trainer, key: str, path: Path) -> None:
    """An image file to every ``WandbLogger`` of ``trainer``."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(str(path))})


def log_report(
    rows: list[dict], tests: list[dict], folder: Path, group: str | None, project: str
) -> str:
    """The comparison as a W&B run of its own (job type ``report``, in the sweep's group): the
    summary table, the paired tests with their p-values and verdicts, and the study page.
    Returns the run's dir."""
    import wandb

    from covidxr.utils.env import wandb_offline

    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        name=f"report-{folder.name}",
        dir=str(folder),
        mode="offline" if wandb_offline() else "online",
        reinit="finish_previous",
    )
    try:
        for key, records in (("report/summary", rows), ("report/paired_tests", tests)):
            if records:
                columns = list(records[0])
                data = [[r.get(c) for c in columns] for r in records]
                run.log({key: wandb.Table(columns=columns, data=data)})
        for test in tests:
            if test.get("stage") == "test":
                key = f"paired/{test['metric']}/{test['setting_b']}/seed_{test['seeds']}"
                run.summary[f"{key}/p_holm"] = test["p_holm"]
                run.summary[f"{key}/verdict"] = test["verdict"]
        page = ReportFolder(folder).page
        if page.is_file():  # the study page, readable in the W&B UI as it is offline
            run.log({"report/page": wandb.Html(page.read_text())})
        return str(run.dir)
    finally:
        run.finish()
