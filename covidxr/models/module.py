"""The ``LightningModule``: a ResNet50 trunk, a head, cross-entropy, per-stage metrics, and the
preprocessing that belongs to it (input size, normalisation, classes, positive class)."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from covidxr.data.formats.classes import normalize_class_name
from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.backbone import NUM_FEATURES, build_backbone
from covidxr.models.heads import build_head
from covidxr.models.metrics import build_metrics, mark_undefined, metric_inputs
from covidxr.models.predictions import Predictions, PredictionStore
from covidxr.models.preprocessing import THRESHOLD_KEY, Preprocessing, positive_index
from covidxr.models.schedulers import optimizer_config
from covidxr.models.tta import View, averaged
from covidxr.utils.compat import attached_trainer
from covidxr.utils.config import to_builtin
from covidxr.utils.errors import CheckpointError, ConfigError
from covidxr.utils.io import check_checkpoint
from covidxr.weights.registry import get_spec

log = logging.getLogger(__name__)
# Epoch metrics are torchmetrics values, already reduced over all processes when computed:
# Lightning's advice to add sync_dist=True does not apply to them.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting")
# The model normalises batches by design (it owns its preprocessing); the data module does not.
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `Lightning")
STAGES = ("train", "val", "test")
#: What loading a damaged or foreign checkpoint raises (a user's file, not a bug of covidxr).
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError)
#: ``val/acc_best`` so far, kept in checkpoints so that a resumed run continues the maximum.
ACC_BEST_KEY = "val_acc_best"


class XRayClassifier(LightningModule):
    """ResNet50 fine-tuning for 2 to 4 chest X-ray classes.

    Batches arrive as uint8 grey ``[B,1,H,W]``; ``on_after_batch_transfer`` normalises them on the
    device with the backbone's mean/std, so ``forward`` takes normalised 3-channel input.

    Args:
        class_names: label order of the data module (``data.classes``).
        image_size: the input side the model is trained at (``data.image_size``); recorded so
            that eval, predict and export read it from the model.
        backbone: the backbone config (key, path, mean, std): where the trunk's weights come from
            and the input normalisation. ``pretrained=False`` skips loading the weights (a
            checkpoint overwrites them anyway).
        head: ``linear`` (dropout + linear) or ``paper`` (the study's MLP).
        dropout: dropout before the linear head.
        class_weights: None, ``"auto"`` (inverse class frequency of the training split), or a
            list of one weight per class, for the cross-entropy loss.
        label_smoothing: cross-entropy label smoothing.
        positive_class: the positive class of binary metrics (COVID).
        channels_last: NHWC memory format, faster with mixed precision on tensor cores.
        compile: ``torch.compile`` the trunk in place; state_dict keys (and so checkpoints) stay
            those of the uncompiled model.
        backbone_lr_multiplier: the backbone's learning rate relative to the head's.
        optimizer: a partial taking ``params`` (Hydra ``_partial_: true``).
        scheduler: ``{"scheduler": partial taking optimizer, "interval": ..., "monitor": ...}``.
    """

    def __init__(
        self,
        class_names: Sequence[str] = ("COVID", "Normal"),
        image_size: int | None = None,
        backbone: Mapping[str, Any] | None = None,
        head: str = "linear",
        dropout: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        positive_class: str = "COVID",
        channels_last: bool = False,
        compile: bool = False,
        backbone_lr_multiplier: float = 1.0,
        ci_resamples: int = 1000,
        ci_level: float = 0.95,
        ci_seed: int = 0,
        pretrained: bool = True,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        class_names = [normalize_class_name(str(c)) for c in class_names]
        positive_class = normalize_class_name(str(positive_class))
        backbone = to_builtin(backbone) or get_spec("random").config()
        self.save_hyperparameters(
            {
                "class_names": class_names,
                "image_size": image_size,
                "backbone": backbone,
                "head": head,
                "dropout": dropout,
                "class_weights": to_builtin(class_weights),
                "label_smoothing": label_smoothing,
                "positive_class": positive_class,
                "channels_last": channels_last,
                "compile": compile,
                "backbone_lr_multiplier": backbone_lr_multiplier,
                "ci_resamples": ci_resamples,
                "ci_level": ci_level,
                "ci_seed": ci_seed,
            }
        )
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self.normalize = NormalizeToRGB(backbone["mean"], backbone["std"])
        self.backbone = build_backbone(**(backbone if pretrained else {"key": "random"}))
        self.head = build_head(head, NUM_FEATURES, len(class_names), dropout)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            self.backbone.compile()
        self.positive = positive_index(class_names, positive_class)
        self.register_buffer("loss_weight", None, persistent=False)
        # Keyed "<stage>_": a ModuleDict key "train" would clash with nn.Module.train().
        self.metrics = nn.ModuleDict({f"{s}_": build_metrics(class_names) for s in STAGES})
        self.losses = nn.ModuleDict({f"{s}_": MeanMetric() for s in STAGES})
        n = len(class_names)
        self.confusion = nn.ModuleDict({f"{s}_": MulticlassConfusionMatrix(n) for s in STAGES})
        self.val_acc_best = MaxMetric()
        # Every test prediction with its dataset index, gathered across processes once.
        self.test_store = PredictionStore()
        #: the last test's record, sorted by dataset index: what every per-image report reads.
        self.test_predictions: Predictions | None = None
        #: the last epoch's confusion matrices (rows: true class), for reports and loggers.
        self.confusion_matrices: dict[str, torch.Tensor] = {}
        #: chosen on validation by ``covidxr-eval target_sensitivity=...``, kept in the checkpoint.
        self.decision_threshold: float | None = None
        #: test-time views (``covidxr-eval tta=shifts``): test probabilities are their mean
        self.tta: tuple[View, ...] = ()
        self._restored_acc_best: float | None = None

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike) -> XRayClassifier:
        """A trained model for inference: on the CPU, uncompiled, without fetching its backbone
        weights (the checkpoint holds them). Loaded with ``weights_only=True``."""
        path = check_checkpoint(ckpt_path)
        try:
            return cls.load_from_checkpoint(
                path, map_location=torch.device("cpu"), pretrained=False, compile=False
            )
        except (
            pickle.UnpicklingError,
            EOFError,
            zipfile.BadZipFile,
            KeyError,
            RuntimeError,
        ) as exc:
            # torch's own message advises weights_only=False, which covidxr never does: not quoted
            raise CheckpointError(
                f"ckpt_path={path} cannot be loaded as a covidxr model ({type(exc).__name__}): "
                "it is damaged, was written by another program, or would run code when loaded. "
                "Give a .ckpt that covidxr-train wrote."
            ) from exc

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names)

    @property
    def preprocessing(self) -> Preprocessing:
        """Everything a consumer needs to feed this model and read its output."""
        hp = self.hparams
        if hp.image_size is None:
            raise ValueError("The model records no image_size: build it with model.image_size.")
        return Preprocessing(
            image_size=int(hp.image_size),
            mean=tuple(hp.backbone["mean"]),
            std=tuple(hp.backbone["std"]),
            class_names=tuple(self.class_names),
            positive_class=hp.positive_class,
            threshold=self.decision_threshold,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """uint8 grey ``[B,1,H,W]`` -> the backbone's normalised 3-channel input, on the device."""
        images, *rest = batch if isinstance(batch, list | tuple) else (batch,)
        images = self.normalize(images)
        return (images, *rest) if rest else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.head(self.backbone(images))

    def setup(self, stage: str) -> None:
        weights = self.hparams.class_weights
        if weights == "auto":
            weights = self.trainer.datamodule.class_weights().tolist()
            log.info("Class weights from training-split frequencies: %s", weights)
        if weights is not None:
            if len(weights) != len(self.class_names):
                raise ConfigError(
                    f"model.class_weights has {len(weights)} values for "
                    f"{len(self.class_names)} classes {self.class_names}."
                )
            self.loss_weight = torch.tensor(weights, dtype=torch.float32, device=self.device)

    def on_train_start(self) -> None:
        # The sanity check's validation must not count as the best epoch; a resumed run starts
        # from the best of the epochs before it.
        self.val_acc_best.reset()
        if self._restored_acc_best is not None:
            self.val_acc_best.update(torch.tensor(self._restored_acc_best))

    def _step(self, batch: Sequence[torch.Tensor], stage: str):
        """A batch is ``(images, target)``, or ``(images, target, dataset index)`` as the data
        module's datasets yield it (the index places each test prediction in the record)."""
        images, target, *index = batch
        logits = self(images)
        loss = nn.functional.cross_entropy(
            logits,
            target,
            weight=self.loss_weight,
            label_smoothing=self.hparams.label_smoothing,
        )
        probs = logits.detach().float().softmax(dim=1)
        if stage == "test" and self.tta:
            with torch.no_grad():
                probs = self.probabilities(images)
        key = f"{stage}_"
        self.losses[key].update(loss.detach(), weight=target.numel())
        self.metrics[key].update(*metric_inputs(probs, target, self.positive))
        self.confusion[key].update(probs.argmax(dim=1), target)
        if stage == "test":
            if not index:  # a plain (images, target) loader, one process: positions in order
                seen = sum(len(t) for t in self.test_store.indices)
                index = [torch.arange(seen, seen + len(target), device=target.device)]
            self.test_store.update(index[0], target, probs)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities of a (normalised) batch, with or without labels."""
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self.probabilities(images)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a normalised batch, averaged over the test-time views
        (``self.tta``; none by default)."""
        if not self.tta:
            return self(images).float().softmax(dim=1)
        black = self.normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8, device=images.device))
        fill = black.flatten().tolist()  # views uncover black film, as on the raw image
        return averaged(images, self.tta, lambda x: self(x).float().softmax(dim=1), fill)

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        key = f"{stage}_"
        values = {f"{stage}/loss": self.losses[key].compute()}
        values |= {f"{stage}/{k}": v for k, v in self.metrics[key].compute().items()}
        matrix = self.confusion[key].compute().cpu()
        values = mark_undefined(values, stage, matrix, self.class_names, self.positive)
        self.log_dict(values, sync_dist=False)  # torchmetrics have synced across processes
        self.losses[key].reset()
        self.metrics[key].reset()
        self.confusion[key].reset()
        self.confusion_matrices[stage] = matrix
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        self.val_acc_best.update(values["val/acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self.test_store.reset()

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
        if self.test_store.update_called:  # gathered from every process, sorted by index
            self.test_predictions = self.test_store.compute()
        self.test_store.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the data module's class, so covidxr-eval can rebuild the same data."""
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None) if trainer else None
        if datamodule is not None:
            kind = type(datamodule)
            checkpoint["datamodule_class"] = f"{kind.__module__}.{kind.__qualname__}"
        if self.decision_threshold is not None:
            checkpoint[THRESHOLD_KEY] = self.decision_threshold
        if self.val_acc_best.update_called:
            checkpoint[ACC_BEST_KEY] = float(self.val_acc_best.compute())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The decision threshold, and the input size of checkpoints written before 0.2 (when
        it was recorded by the data module only)."""
        self.decision_threshold = checkpoint.get(THRESHOLD_KEY)
        self._restored_acc_best = checkpoint.get(ACC_BEST_KEY)
        if self.hparams.get("image_size") is None:
            data = checkpoint.get("datamodule_hyper_parameters") or {}
            if "image_size" in data:
                self.hparams.image_size = int(data["image_size"])

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters only: the head's, then the backbone's at its own rate."""
        head = [p for p in self.head.parameters() if p.requires_grad]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": head, "name": "head"}]
        if backbone:
            group = {"params": backbone, "name": "backbone"}
            multiplier = self.hparams.backbone_lr_multiplier
            if multiplier != 1.0:
                group["lr"] = self.optimizer_factory.keywords["lr"] * multiplier
            groups.append(group)
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError("No optimizer configured: set model.optimizer (see conf/optimizer/).")
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        return optimizer_config(optimizer, self.scheduler_config)
