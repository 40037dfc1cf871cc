"""Each use of Lightning's private API (``covidxr.utils.compat``) still does what covidxr needs.

An upgrade of Lightning that renames or changes one of them fails here, by name.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.utilities.exceptions import SIGTERMException

from covidxr.reporting.csv_log import ContinuingCSVLogger
from covidxr.utils import compat


def trainer(tmp_path: Path, **kwargs) -> Trainer:
    defaults = {
        "default_root_dir": tmp_path,
        "max_epochs": 1,
        "limit_train_batches": 4,
        "limit_val_batches": 1,
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return Trainer(**{**defaults, **kwargs})


def test_the_private_names_still_exist() -> None:
    assert "_save_checkpoint" in vars(ModelCheckpoint)
    assert callable(getattr(ExperimentWriter, "_check_log_dir_exists", None))
    assert hasattr(subprocess_script, "_hydra_subprocess_cmd")
    launcher = inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    assert "_hydra_subprocess_cmd(" in launcher  # what Lightning calls to start DDP children


def test_atomic_checkpoint_writes_whole_files(tmp_path: Path) -> None:
    saver = compat.AtomicModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")
    trainer(tmp_path, callbacks=[saver]).fit(BoringModel())
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["last.ckpt"]  # written through last.ckpt.part, renamed onto it
    assert saver._last_checkpoint_saved.endswith("last.ckpt")
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 4


class StopAt(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            compat.request_stop(trainer)


def test_request_stop_stops_after_the_batch_like_sigterm(tmp_path: Path) -> None:
    run = trainer(tmp_path, callbacks=[StopAt(1)], enable_checkpointing=False)
    with pytest.raises(SIGTERMException):
        run.fit(BoringModel())
    assert run.global_step == 2


def test_a_mid_epoch_checkpoint_says_how_many_batches_it_holds(tmp_path: Path) -> None:
    run = trainer(tmp_path, callbacks=[StopAt(1)], enable_checkpointing=False)
    with pytest.raises(SIGTERMException):
        run.fit(BoringModel())
    run.save_checkpoint(tmp_path / "mid.ckpt")
    mid = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    assert compat.batches_done_in_epoch(mid) == 2
    done = trainer(tmp_path / "full", enable_checkpointing=False)
    done.fit(BoringModel())
    done.save_checkpoint(tmp_path / "end.ckpt")
    assert compat.batches_done_in_epoch(torch.load(tmp_path / "end.ckpt", weights_only=True)) == 0


def test_the_csv_log_of_a_resumed_run_continues(tmp_path: Path) -> None:
    for step in (1, 2):
        logger = ContinuingCSVLogger(tmp_path, name="", version="")
        logger.log_metrics({"loss": float(step)}, step=step)
        logger.save()
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows == ["loss,step", "1.0,1", "2.0,2"]


def test_ddp_children_are_routed_to_the_given_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def command(local_rank: int) -> tuple[list[str], str]:
        return ["child", str(local_rank)], "."

    monkeypatch.setattr(
        subprocess_script, "_hydra_subprocess_cmd", subprocess_script._hydra_subprocess_cmd
    )
    compat.route_ddp_children(command)
    assert subprocess_script._hydra_subprocess_cmd is command


def test_attached_trainer_is_none_outside_a_trainer(tmp_path: Path) -> None:
    model = BoringModel()
    assert compat.attached_trainer(model) is None
    run = trainer(tmp_path, enable_checkpointing=False)
    run.fit(model)
    assert compat.attached_trainer(model) is run


def test_onednn_says_whether_it_has_bf16_convolutions() -> None:
    """torch's own test (an op of the mkldnn namespace) still exists and agrees with the CPU:
    oneDNN's bf16 needs AVX-512 (BW, VL, DQ) or AMX."""
    from covidxr.utils.env import cpu_flags

    flags = cpu_flags()
    expected = {"avx512bw", "avx512vl", "avx512dq"} <= flags or "amx_bf16" in flags
    assert compat.onednn_bf16() is expected or not flags  # no /proc/cpuinfo: nothing to compare
