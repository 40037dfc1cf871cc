"""Every use of Lightning's private API, in one place.

covidxr needs four things Lightning offers no public hook for. Each is reached only through this
module, and ``tests/test_private_api.py`` exercises each one, so an upgrade that changes them
fails there, loudly, instead of silently breaking resume, preemption or DDP inside sweeps.

| touch point | what covidxr needs |
|---|---|
| ``ModelCheckpoint._save_checkpoint`` | write checkpoint files atomically |
| ``Trainer._signal_connector.received_sigterm`` | SIGUSR1 stops training as SIGTERM does |
| ``ExperimentWriter._check_log_dir_exists`` | a resumed run appends to its ``metrics.csv`` |
| ``subprocess_script._hydra_subprocess_cmd`` | DDP children of a multirun job run that job |
| ``LightningModule._trainer`` | a hook that also runs without a Trainer attached |
| checkpoint ``loops.fit_loop`` | how far into its epoch a mid-epoch checkpoint was written |
| ``fit_loop.epoch_progress`` | the epoch a (resumed) run's first training loader serves |
| ``torch.ops.mkldnn._is_mkldnn_bf16_supported`` | whether CPU bf16 convolutions run in oneDNN |
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies.launchers import subprocess_script

from covidxr.utils.io import partial_file
from covidxr.utils.timing import STOPWATCH


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` writing each file beside its final name, then renaming it onto it, so
    a job killed while saving leaves the previous file whole."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with STOPWATCH.phase("fit/checkpoint writes"), partial_file(filepath) as partial:
            super()._save_checkpoint(trainer, str(partial))
            if trainer.is_global_zero:
                os.replace(partial, filepath)
        trainer.strategy.barrier("checkpoint_renamed")
        self._last_checkpoint_saved = filepath


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one keeps its columns and
    appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


def request_stop(trainer: L.Trainer) -> None:
    """Stop after the current batch exactly as on SIGTERM (``SIGTERMException``, last.ckpt)."""
    trainer._signal_connector.received_sigterm = True


def route_ddp_children(command: Callable[[int], tuple[list[str], str]]) -> None:
    """``command(local_rank) -> (argv, cwd)`` starts DDP ranks > 0 when Hydra is in use."""
    if not hasattr(subprocess_script, "_hydra_subprocess_cmd"):
        raise RuntimeError(
            "This Lightning version no longer starts DDP children through "
            "subprocess_script._hydra_subprocess_cmd: update covidxr.utils.compat."
        )
    subprocess_script._hydra_subprocess_cmd = command


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's Trainer, or None outside one (``module.trainer`` raises there)."""
    return module._trainer


def batches_done_in_epoch(checkpoint: dict[str, Any]) -> int:
    """Batches the checkpoint's epoch had completed when it was written mid-epoch; 0 when it
    was written at an epoch's end (or by a run that never trained)."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    if progress.get("is_last_batch", True):
        return 0
    return int(progress.get("current", {}).get("completed", 0))


def epoch_in_progress(trainer: L.Trainer | None) -> int:
    """The epoch the training loader is about to serve: 0 for a new run, the restored epoch for
    a resumed one (the number Lightning itself passes to ``sampler.set_epoch``).

    Lightning creates a resumed run's first training iterator before it sets the sampler's epoch;
    with worker processes the iterator draws its first indices at once, so a sampler must know
    its epoch when the loader is made.
    """
    if trainer is None:
        return 0
    return int(trainer.fit_loop.epoch_progress.current.processed)


def onednn_bf16() -> bool:
    """True when oneDNN runs bfloat16 convolutions on this CPU (AVX-512 or AMX): without it torch
    falls back to its reference convolution (``aten::_slow_conv2d``), many times slower than
    fp32. torch's own test of it is an op of the ``mkldnn`` namespace."""
    import torch

    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
