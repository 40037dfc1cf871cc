"""The ``LightningModule`` of self-supervised pretraining: a ResNet50 trunk, a method around it,
and a kNN monitor.

Batches arrive as uint8 grey views; ``on_after_batch_transfer`` normalises them with the start
weight's mean/std (what fine-tuning from the trunk will use). After each validation pass the
trunk's features of a labeled bank score the queries by weighted kNN (lightly's
``knn_predict``): ``val/knn_acc``, a label-free method's progress in the task's own terms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightly.loss.memory_bank import MemoryBankModule
from lightly.utils.benchmarking import knn_predict
from lightning import LightningModule
from torch import nn

from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.backbone import build_backbone
from covidxr.models.schedulers import optimizer_config
from covidxr.pretraining.methods import Method
from covidxr.utils.config import to_builtin

#: The checkpoint entry holding the methods' queues (lightly keeps them out of state_dict).
QUEUES_KEY = "ssl_memory_banks"


class SelfSupervised(LightningModule):
    """Pretrain ``backbone``'s trunk with ``method``.

    Args:
        method: a ``Method`` (``ssl.method``): heads, momentum encoder, loss.
        backbone: the start weight's config (key, path, mean, std), as fine-tuning takes it.
        optimizer: a partial taking ``params`` (``conf/optimizer``).
        scheduler: a ``conf/scheduler`` entry, or None.
        knn_k, knn_t: neighbours and temperature of the kNN monitor.
    """

    def __init__(
        self,
        method: Method,
        backbone: Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Mapping[str, Any] | None = None,
        knn_k: int = 20,
        knn_t: float = 0.1,
    ) -> None:
        super().__init__()
        backbone = to_builtin(backbone)
        self.save_hyperparameters({"backbone": backbone, "method": method.name,
                                   "knn_k": knn_k, "knn_t": knn_t})  # fmt: skip
        self.normalize = NormalizeToRGB(backbone["mean"], backbone["std"])
        self.trunk = build_backbone(**backbone)
        self.method = method
        self.method.attach(self.trunk)
        self.optimizer_factory, self.scheduler_config = optimizer, scheduler
        self._features: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, rest = batch
        if isinstance(images, list):  # training: the views of each image
            return [self.normalize(v) for v in images], rest
        return self.normalize(images), rest

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        views, _ = batch
        steps = max(1, int(self.trainer.estimated_stepping_batches) - 1)
        loss = self.method.loss(self.trunk, views, min(1.0, self.global_step / steps))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(views[0]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._features = {}

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = batch
        features = nn.functional.normalize(self.trunk(images).float(), dim=1)
        self._features.setdefault(dataloader_idx, []).append((features, labels))

    def on_validation_epoch_end(self) -> None:
        if len(self._features) < 2:
            return
        bank, bank_labels = (torch.cat(t) for t in zip(*self._features[0], strict=True))
        queries, labels = (torch.cat(t) for t in zip(*self._features[1], strict=True))
        classes = int(max(bank_labels.max(), labels.max())) + 1
        k = min(int(self.hparams.knn_k), len(bank))
        predicted = knn_predict(queries, bank.T, bank_labels, classes, k, self.hparams.knn_t)
        accuracy = (predicted[:, 0] == labels).float().mean()
        self.log("val/knn_acc", accuracy, prog_bar=True)
        self._features = {}

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer_factory(params=params), self.scheduler_config)

    def _queues(self) -> dict[str, MemoryBankModule]:
        return {n: m for n, m in self.named_modules() if isinstance(m, MemoryBankModule)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The queues (lightly registers them as non-persistent buffers): a resumed MoCo run
        continues with its negatives, not with random vectors."""
        checkpoint[QUEUES_KEY] = {
            name: {"bank": m.bank.detach().cpu(), "bank_ptr": m.bank_ptr.detach().cpu()}
            for name, m in self._queues().items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(QUEUES_KEY, {})
        for name, module in self._queues().items():
            if name in saved:
                module.bank = saved[name]["bank"].to(module.bank)
                module.bank_ptr = saved[name]["bank_ptr"].to(module.bank_ptr)

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The trunk as a torchvision ResNet50 state_dict without ``fc``, on the CPU."""
        return {k: v.detach().cpu().clone() for k, v in self.trunk.state_dict().items()}
