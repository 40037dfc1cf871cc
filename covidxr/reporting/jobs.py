"""The runs of a sweep: finding their folders and grouping them into settings.

Rows are keyed by every override that differs between the jobs except the seed (read from each
job's ``.hydra/overrides.yaml``), so ``finetune=full,linear_probe seed=1,2`` gives two settings of
two runs each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from covidxr.run_folder import RunFolder
from covidxr.utils.errors import MissingFileError

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
    import yaml

    jobs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise MissingFileError(f"{folder} is not a folder: give a multirun or run folder.")
        configs = sorted({*folder.glob(CONFIG), *folder.glob(f"**/{CONFIG}")})
        for config_path in configs:
            run = RunFolder(config_path.parent.parent)
            config = yaml.safe_load(run.config.read_text()) or {}
            overrides = yaml.safe_load(run.overrides.read_text()) if run.overrides.is_file() else []
            job = Job(run.path, config, [str(o) for o in overrides or []])
            if run.metrics.is_file():
                job.metrics = json.loads(run.metrics.read_text())
            elif run.failed.is_file():
                job.error = json.loads(run.failed.read_text()).get("error", "failed")
            jobs.append(job)
    return jobs


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
