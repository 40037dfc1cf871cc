"""A callback that signals its own process mid-epoch, for the resume tests (added by override:
``+callbacks.kill._target_=fault_injection.KillDuring``, with ``tests/`` on PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning import Callback


class KillDuring(Callback):
    """Send ``signum`` (default SIGKILL) to this process at batch ``batch`` of epoch ``epoch``
    (both 0-based) of ``phase``: ``train``, ``test`` (a test batch), or ``report`` (after the
    test loop, as the report is about to be written). With ``once_file``, only the first time:
    the file marks that it happened."""

    def __init__(
        self,
        epoch: int = 1,
        batch: int = 1,
        signum: int = signal.SIGKILL,
        once_file: str | None = None,
        phase: str = "train",
    ) -> None:
        self.epoch, self.batch, self.signum, self.phase = epoch, batch, signum, phase
        self.once_file = Path(once_file) if once_file else None

    def _kill(self) -> None:
        if self.once_file is not None:
            if self.once_file.exists():
                return
            self.once_file.touch()
        os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.phase == "train" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self._kill()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, *args) -> None:
        if self.phase == "test" and batch_idx == self.batch:
            self._kill()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.phase == "report" and stage == "test":  # the Trainer's own handler is gone
            self._kill()
