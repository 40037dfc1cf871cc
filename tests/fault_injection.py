"""A callback that kills its own process mid-epoch, for the resume tests (added by override:
``+callbacks.kill._target_=fault_injection.KillDuring``, with ``tests/`` on PYTHONPATH)."""

from __future__ import annotations

import os
import signal

from lightning import Callback


class KillDuring(Callback):
    """``kill -9`` this process at batch ``batch`` of epoch ``epoch`` (both 0-based)."""

    def __init__(self, epoch: int = 1, batch: int = 1, signum: int = signal.SIGKILL) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)
