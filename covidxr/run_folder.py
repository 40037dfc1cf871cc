"""Every file a run folder holds, and where a run's data lives: one place, so no module spells a
run file's name or derives the data root itself.

A run folder is ``logs/<task>/runs/<date>_<time>_<id>/`` (or a multirun's ``<n>/``); a checkpoint
lies in its ``checkpoints/``, so the run of any checkpoint is known from its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder, by what they hold."""

    path: Path

    @classmethod
    def of_checkpoint(cls, ckpt_path: str | os.PathLike) -> RunFolder:
        """``<run>`` for ``<run>/checkpoints/<name>.ckpt``."""
        return cls(Path(ckpt_path).resolve().parent.parent)

    @property
    def lock(self) -> Path:
        """Held by the process running the job (``covidxr.utils.locks``): one job per folder."""
        return self.path / "run.lock"

    def results(self) -> list[Path]:
        """What the folder holds beyond a job's bookkeeping (its config, settings, error, lock and
        log): the files an earlier run left, which a new start must not write over."""
        bookkeeping = {self.hydra_dir, self.job, self.failed, self.lock}
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p not in bookkeeping and p.suffix != ".log")

    @property
    def hydra_dir(self) -> Path:
        """The composed config and overrides Hydra wrote."""
        return self.path / ".hydra"

    @property
    def config(self) -> Path:
        return self.hydra_dir / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.hydra_dir / "overrides.yaml"

    @property
    def job(self) -> Path:
        """The settings (overrides) its job started with: another job never continues it."""
        return self.path / "job.json"

    @property
    def split(self) -> Path:
        """Every image the run used and its split (``path,label,class,split,group``)."""
        return self.path / "split.csv"

    @property
    def unreadable(self) -> Path:
        """Images left out by ``data.skip_corrupt=true`` and why."""
        return self.path / "unreadable_images.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        """The last epoch (or the step a signal stopped) with optimizer state, to resume."""
        return self.checkpoints / "last.ckpt"

    @property
    def fit_record(self) -> Path:
        """What fit ended with (its metrics, the best checkpoint): a job stopped after it tests
        without fitting again."""
        return self.path / "fit.json"

    @property
    def trunk(self) -> Path:
        """covidxr-pretrain's trunk: a torchvision ResNet50 state_dict without ``fc``."""
        return self.path / "trunk.pth"

    @property
    def passport(self) -> Path:
        """The trunk's passport (method, images, input size, mean/std, start weight, licence)."""
        return self.path / "trunk.json"

    @property
    def pretrain_images(self) -> Path:
        """Every image covidxr-pretrain learned from, relative to its root."""
        return self.path / "pretrain_images.csv"

    @property
    def metrics(self) -> Path:
        """The final metrics, flat keys (``test/acc``)."""
        return self.path / "metrics.json"

    @property
    def timings(self) -> Path:
        """Seconds per phase of the job (index, fit and its epochs, test, report)."""
        return self.path / "timings.json"

    @property
    def failed(self) -> Path:
        """The error of a job that failed (sweeps go on)."""
        return self.path / "failed.json"

    def predictions(self, stage: str) -> Path:
        """The record of a stage's predictions, one row per image in dataset order."""
        return self.path / f"predictions_{stage}.csv"

    def confusion_matrix(self, stage: str) -> Path:
        """``.csv`` and ``.png`` of this stem."""
        return self.path / f"confusion_matrix_{stage}"

    def reliability(self, stage: str) -> Path:
        return self.path / f"reliability_{stage}.png"

    @property
    def ensemble_members(self) -> Path:
        """An ensemble evaluation's members and their own test metrics."""
        return self.path / "ensemble_members.csv"

    @property
    def cam_grid(self) -> Path:
        return self.path / "cam_grid.png"

    def service_id(self, name: str) -> Path:
        """The id of a logger's run (``wandb``), reused when the job resumes in this folder."""
        return self.path / f"{name}_id.txt"


@dataclass(frozen=True)
class ReportFolder:
    """What ``covidxr-report`` writes for a set of runs."""

    path: Path

    @property
    def markdown(self) -> Path:
        return self.path / "report.md"

    @property
    def table(self) -> Path:
        return self.path / "report.csv"

    @property
    def figure(self) -> Path:
        return self.path / "report.png"

    @property
    def paired_tests(self) -> Path:
        return self.path / "paired_tests.csv"

    @property
    def page(self) -> Path:
        """The study page: self-contained, readable offline."""
        return self.path / "report.html"

    @property
    def page_data(self) -> Path:
        """The page's numbers as JSON."""
        return self.path / "report.json"

    @property
    def page_files(self) -> Path:
        """The page's figures as PNG files (inlined in the page too)."""
        return self.path / "report_files"

    def checklist(self, key: str) -> Path:
        return self.path / f"checklist_{key}.csv"


def data_root(hparams: Mapping[str, Any]) -> Path:
    """The dataset folder a data module's hyper-parameters name: ``root``, else the folder of
    the ``manifest`` (whose paths are relative to it)."""
    root = hparams.get("root")
    if root is not None:
        return Path(str(root))
    return Path(str(hparams.get("manifest", ""))).parent
