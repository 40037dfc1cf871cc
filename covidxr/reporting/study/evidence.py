"""What a study page is computed from, read once from the run folders: the jobs and their
settings, each run's predictions per split, the split file, the images left out, the manifest's
columns. A damaged run folder is named in one line."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from covidxr.data.formats.manifest import read_manifest
from covidxr.reporting.jobs import Job, find_jobs, setting_of, varied_keys
from covidxr.reporting.paired import Record, read_record
from covidxr.run_folder import RunFolder, data_root
from covidxr.utils.errors import DatasetError, MissingFileError, UserError

#: The splits a run records predictions for, in the order a page shows them.
STAGES = ("val", "test", "external")


@dataclass
class StudyEvidence:
    """The runs of one study (a run, a sweep, a CV study, an ensemble or external evaluation)."""

    jobs: list[Job]
    keys: list[str]
    records: dict[Path, dict[str, Record]] = field(default_factory=dict)
    split: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "ok"]

    def setting(self, job: Job) -> str:
        return setting_of(job, self.keys)

    @property
    def settings(self) -> list[str]:
        return sorted({self.setting(j) for j in self.done})

    def runs_of(self, setting: str) -> list[Job]:
        return sorted((j for j in self.done if self.setting(j) == setting),
                      key=lambda j: (j.seed is None, j.seed or 0, str(j.path)))  # fmt: skip

    def record(self, job: Job, stage: str) -> Record | None:
        return self.records.get(job.path, {}).get(stage)

    @property
    def first(self) -> Job | None:
        return self.done[0] if self.done else None

    @property
    def classes(self) -> list[str]:
        for stages in self.records.values():
            for record in stages.values():
                return list(record.classes)
        return []

    def data_root(self) -> Path | None:
        data = (self.first.config.get("data") or {}) if self.first else {}
        try:
            return data_root(data)
        except (KeyError, TypeError):
            return None


def gather(folders: Sequence[str | os.PathLike]) -> StudyEvidence:
    """Read every run under ``folders``; a folder whose records cannot be read is one line."""
    jobs = find_jobs(folders)
    if not jobs:
        raise MissingFileError(
            f"No run folders (with .hydra/config.yaml) under {list(map(str, folders))}."
        )
    evidence = StudyEvidence(jobs, varied_keys(jobs))
    for job in evidence.done:
        run = RunFolder(job.path)
        for stage in STAGES:
            if run.predictions(stage).is_file():
                try:
                    evidence.records.setdefault(job.path, {})[stage] = read_record(
                        run.predictions(stage)
                    )
                except (UserError, ValueError, KeyError) as exc:
                    raise DatasetError(
                        f"{run.predictions(stage)} is damaged ({exc}): run the job again "
                        "(resume=auto) or leave its folder out."
                    ) from None
    first = evidence.first
    if first is not None:
        run = RunFolder(first.path)
        evidence.split = _rows(run.split)
        evidence.unreadable = _rows(run.unreadable)
        manifest = (first.config.get("data") or {}).get("manifest")
        if manifest:
            try:
                evidence.columns = read_manifest(manifest, evidence.data_root()).columns
            except UserError as exc:
                evidence.notes.append(f"manifest columns not shown: {exc}")
    return evidence


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def read_job_record(job: Job) -> dict:
    """``job.json`` (settings and the machine) of a run, or an empty record."""
    path = RunFolder(job.path).job
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
