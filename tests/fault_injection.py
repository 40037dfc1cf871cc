"""A callback that signals its own process mid-epoch, for the resume tests (added by override:
``+callbacks.kill._target_=fault_injection.KillDuring``, with ``tests/`` on PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning import Callback


class KillDuring(Callback):
    """Send ``signum`` (default SIGKILL) to this process at batch ``batch`` of epoch ``epoch``
    (both 0-based). With ``once_file``, only the first time: the file marks that it happened."""

    def __init__(
        self,
        epoch: int = 1,
        batch: int = 1,
        signum: int = signal.SIGKILL,
        once_file: str | None = None,
    ) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum
        self.once_file = Path(once_file) if once_file else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        if self.once_file is not None:
            if self.once_file.exists():
                return
            self.once_file.touch()
        os.kill(os.getpid(), self.signum)
