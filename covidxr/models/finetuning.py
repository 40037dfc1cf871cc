"""Fine-tuning schemes as Lightning callbacks (the ``finetune/`` config group).

``full`` needs none. Each scheme keeps the optimizer's parameter groups identical between a run
and its resumption from ``last.ckpt``, so the saved optimizer state always fits.
"""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BackboneFinetuning


def set_backbone_trainable(module: LightningModule, trainable: bool) -> None:
    for parameter in module.backbone.parameters():
        parameter.requires_grad_(trainable)


class LinearProbe(Callback):
    """Backbone frozen with BatchNorm in eval mode (running statistics fixed): only the head learns.

    Frozen before ``configure_optimizers``, which then holds the head's parameters only.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        set_backbone_trainable(pl_module, False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        pl_module.backbone.eval()  # Lightning switches the whole model to train() every epoch


class PaperSchedule(Callback):
    """The reference study: the whole network for ``full_epochs`` epoch(s), then the head only.

    BatchNorm statistics keep updating, as in the study's notebooks. The optimizer holds every
    parameter from the start; frozen ones get no gradient and so no update, and a resumed run
    builds the same parameter groups.
    """

    def __init__(self, full_epochs: int = 1) -> None:
        self.full_epochs = full_epochs

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        set_backbone_trainable(pl_module, trainer.current_epoch < self.full_epochs)


class GradualUnfreezing(BackboneFinetuning):
    """Lightning's ``BackboneFinetuning`` (head first, backbone from epoch k at a lower rate),
    fixed for resumption.

    On resume Lightning restores the optimizer's extra backbone group, but the backbone was frozen
    again in ``setup``, so it would silently stop learning. Parameters in restored groups are made
    trainable again.
    """

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.requires_grad_(True)
