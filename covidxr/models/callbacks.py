"""Callbacks that make a run a pure function of its config, resumable to the same end.

``StepSeed`` re-seeds the global generators from (seed, step) before every training step (dropout,
anything drawn in the step), so a step replays exactly after a resume, whatever consumed random
numbers before it (Lightning creates data iterators at different moments in a resumed run).
``ResumableCheckpoint`` keeps the best checkpoint of every segment of a run: resumed into a new
run folder, it carries the best score and file over instead of starting the comparison again.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from covidxr.data.sampling import derive_seed
from covidxr.utils.io import atomic_path

log = logging.getLogger(__name__)


class StepSeed(Callback):
    """Seed torch, NumPy and ``random`` from ``(seed, global step, rank)`` before each step."""

    def __init__(self, seed: int | None) -> None:
        self.seed = None if seed is None else int(seed)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.seed is None:  # seed=null: a run that is not meant to repeat
            return
        seed = derive_seed(self.seed, trainer.global_step, trainer.global_rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, resumed into another folder, keeps the earlier segment's best.

    Lightning restores only ``best_model_path`` when the folder changed, so the new folder's first
    epoch would become "best" however poor. Here the best file is copied into the new folder and
    its score restored, so ``best.ckpt``, the tested model and the value returned to sweepers are
    the best of all segments.
    """

    @property
    def state_key(self) -> str:
        # The same key as Lightning's class: checkpoints of either resume into the other.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        earlier = state_dict.get("dirpath")
        if earlier is None or earlier == self.dirpath:
            super().load_state_dict(state_dict)
            return
        if self.monitor is None:  # last.ckpt: rewritten every epoch, nothing to carry over
            return
        best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if not best or score is None or not Path(best).is_file():
            super().load_state_dict(state_dict)
            return
        target = Path(self.dirpath) / Path(best).name
        with atomic_path(target) as tmp:
            shutil.copyfile(best, tmp)
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}
        log.info(
            "Resumed with the earlier best (%s = %.4f), copied to %s", self.monitor, score, target
        )
