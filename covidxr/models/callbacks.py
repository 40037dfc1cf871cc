"""Callbacks that make a run a pure function of its config, resumable to the same end.

``StepSeed`` re-seeds the global generators from (seed, step) before every training step (dropout,
anything drawn in the step), so a step replays exactly after a resume, whatever consumed random
numbers before it (Lightning creates data iterators at different moments in a resumed run).
``ResumableCheckpoint`` keeps the best checkpoint of every segment of a run: resumed into a new
run folder, it carries the best score and file over instead of starting the comparison again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from covidxr.data.loading.sampling import derive_seed
from covidxr.utils.compat import AtomicModelCheckpoint, batches_done_in_epoch, request_stop
from covidxr.utils.io import atomic_path, partial_file
from covidxr.utils.timing import STOPWATCH

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


class PhaseTimes(Callback):
    """Each training epoch's wall time (its validation and checkpoints included) and validation's
    total, in the job's stopwatch (``timings.json``; ``covidxr-bench recipe`` prints them)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started["epoch"] = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "epoch" in self.started:
            seconds = time.perf_counter() - self.started.pop("epoch")
            STOPWATCH.add(f"fit/epoch {trainer.current_epoch + 1}", seconds)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started["validation"] = time.perf_counter()

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "validation" in self.started:
            name = "fit/sanity check" if trainer.sanity_checking else "fit/validation"
            STOPWATCH.add(name, time.perf_counter() - self.started.pop("validation"))


class ResumableCheckpoint(AtomicModelCheckpoint):
    """``ModelCheckpoint`` whose files are written atomically and that, resumed into another
    folder, keeps the earlier segment's best.

    A file is written beside its final name and renamed onto it, so a job killed while saving
    (preemption, a time limit) leaves the previous ``last.ckpt`` whole.

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


class Preemption(Callback):
    """SIGUSR1 (a scheduler's warning before a time limit) stops training like SIGTERM does.

    Lightning already stops after the current batch on SIGTERM; this makes SIGUSR1 do the same,
    handing the signal on to any handler installed before (submitit's requeue, for instance).
    Stopped, it writes ``last.ckpt`` mid-epoch and ``covidxr-train`` exits 143
    (``covidxr.utils.signals``); started again with ``resume=auto`` in the same folder, the job
    skips what the interrupted epoch had seen and ends with the numbers of an uninterrupted run.
    """

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGUSR1)

        def stop(signum: int, frame: Any) -> None:
            log.warning("Received signal %d: stopping after this batch", signum)
            request_stop(trainer)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGUSR1, stop)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Stopped by a signal while fitting: write ``last.ckpt`` now, mid-epoch, atomically
        (stopped while testing, the finished run's ``last.ckpt`` is kept as it is)."""
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        last = next(
            (c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", 0) is None), None
        )
        if last is None or last.dirpath is None:
            return
        path = Path(last.dirpath) / f"{last.filename or 'last'}.ckpt"
        with partial_file(path) as partial:
            trainer.save_checkpoint(partial)
            if trainer.is_global_zero:
                os.replace(partial, path)
        log.warning("Saved %s at step %d (mid-epoch) before stopping", path, trainer.global_step)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A checkpoint written mid-epoch: the data module skips what that epoch already saw."""
        done = batches_done_in_epoch(checkpoint)
        if not done:
            return
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "resume_from"):
            epoch = checkpoint["epoch"]
            datamodule.resume_from = (epoch, done * datamodule.hparams.batch_size)
            log.info("Resuming epoch %d after its first %d batches", epoch + 1, done)
