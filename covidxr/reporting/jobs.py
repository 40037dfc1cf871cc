"""The runs of a sweep: finding their folders and grouping them into settings.

Rows are keyed by every override that differs between the jobs except the seed (read from each
job's ``.hydra/overrides.yaml``), so ``finetune=full,linear_probe seed=1,2`` gives two settings of
two runs each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from covidxr.run_folder import RunFolder
from covidxr.utils.errors import DatasetError, MissingFileError

#: Where a run folder keeps its composed config, relative to it: what makes a folder a run.
CONFIG = RunFolder(Path()).config.as_posix()


@dataclass
class Job:
    """One run folder: its composed config, overrides, and metrics or error."""

    path: Path
    config: dict
    overrides: list[str]
    metrics: dict[str, float] | None = None
    error: str | None = None
    #: ``covidxr-eval ckpt_path=<this run's checkpoint> external=...`` runs folded into this one
    evaluation: Job | None = None

    def predictions(self, stage: str) -> Path:
        """The record of a stage's predictions: an external set's from its evaluation run."""
        if stage == "external" and self.evaluation is not None:
            return RunFolder(self.evaluation.path).predictions(stage)
        return RunFolder(self.path).predictions(stage)

    @property
    def external_root(self) -> Path | None:
        """The folder of the external images this run (or its evaluation) was tested on."""
        source = self.evaluation.config if self.evaluation is not None else self.config
        return Path(str(source["external"])) if source.get("external") else None

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed" if self.error else "incomplete"

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def backbone(self) -> str:
        backbone = self.config.get("backbone") or {}
        key = backbone.get("key", "unknown")
        if key == "file" and backbone.get("path"):
            key = f"file:{Path(str(backbone['path'])).name}"
        return key

    @property
    def fold(self) -> int | None:
        """The validation fold of a cross-validation job (``data.folds`` set), else None."""
        data = self.config.get("data") or {}
        return data.get("fold") if data.get("folds") else None

    def override(self, key: str) -> str | None:
        for item in self.overrides:
            name, _, value = item.lstrip("+~").partition("=")
            if name == key:
                return value
        return None


def find_jobs(folders: Sequence[str | os.PathLike]) -> list[Job]:
    """Every run folder (one with ``.hydra/config.yaml``) in or under ``folders``."""
    jobs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise MissingFileError(f"{folder} is not a folder: give a multirun or run folder.")
        configs = sorted({*folder.glob(CONFIG), *folder.glob(f"**/{CONFIG}")})
        for config_path in configs:
            run = RunFolder(config_path.parent.parent)
            config = _read(run.config, yaml.safe_load) or {}
            overrides = _read(run.overrides, yaml.safe_load) if run.overrides.is_file() else []
            job = Job(run.path, config, [str(o) for o in overrides or []])
            if run.metrics.is_file():
                job.metrics = _read(run.metrics)
            elif run.failed.is_file():
                job.error = _read(run.failed).get("error", "failed")
            jobs.append(job)
    return attach_evaluations(jobs)


def _read(path: Path, parse: Callable[[str], Any] = json.loads) -> Any:
    """A run file's contents; a damaged one is named with what to do."""
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DatasetError(
            f"{path} is damaged ({exc}): run that job again (resume=auto) or leave its folder "
            "out of the report."
        ) from None


def attach_evaluations(jobs: list[Job]) -> list[Job]:
    """Fold each external evaluation of a job's checkpoint (``covidxr-eval ckpt_path=<run>/
    checkpoints/<name>.ckpt external=<folder>``) into that job: its ``external/*`` metrics and
    predictions become the job's, so the sweep's rows hold internal and external side by side."""
    by_path = {job.path.resolve(): job for job in jobs}
    kept = []
    for job in jobs:
        ckpt = job.config.get("ckpt_path")
        trained = by_path.get(RunFolder.of_checkpoint(ckpt).path) if ckpt else None
        if trained is None or not job.config.get("external") or job.metrics is None:
            kept.append(job)
            continue
        external = {k: v for k, v in job.metrics.items() if k.startswith("external/")}
        if trained.metrics is not None:
            trained.metrics = {**trained.metrics, **external}
        trained.evaluation = job
    return kept


IGNORED_KEYS = ("seed", "hydra.", "data.ci_seed", "model.ci_seed", "data.fold=")


def varied_keys(jobs: Sequence[Job]) -> list[str]:
    """Overrides whose value differs between the jobs, the seed and Hydra's own excepted."""
    keys = sorted(
        {
            item.lstrip("+~").partition("=")[0]
            for job in jobs
            for item in job.overrides
            if not item.lstrip("+~").startswith(IGNORED_KEYS)
        }
    )
    return [k for k in keys if len({job.override(k) for job in jobs}) > 1]


def setting_of(job: Job, keys: Sequence[str]) -> str:
    """The row a job belongs to: its values of the varied overrides (its backbone if none)."""
    if not keys:
        return job.backbone
    return " ".join(f"{k}={job.override(k)}" for k in keys if job.override(k) is not None)
