"""What a study page is computed from, read once from the run folders: the jobs and their
settings, each run's predictions per split, the split file, the images left out, the manifest's
columns. A damaged run folder is named in one line."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covidxr.data.formats.manifest import read_manifest
from covidxr.data.splitting.groups import SOURCE
from covidxr.reporting.jobs import Job, setting_of, varied_keys
from covidxr.reporting.paired import Record, read_record
from covidxr.run_folder import RunFolder, data_root
from covidxr.utils.errors import DatasetError, UserError

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
    #: the folder the first finished run's images were under, when this machine can tell
    root: Path | None = None

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


def gather(jobs: list[Job]) -> StudyEvidence:
    """Read the records of ``jobs``; a run whose records cannot be read is one line."""
    evidence = StudyEvidence(jobs, varied_keys(jobs))
    for job in evidence.done:
        for stage in STAGES:
            path = job.predictions(stage)
            if path.is_file():
                try:
                    evidence.records.setdefault(job.path, {})[stage] = read_record(path)
                except (UserError, ValueError, KeyError) as exc:
                    raise DatasetError(
                        f"{path} is damaged ({exc}): run the job again (resume=auto) or leave "
                        "its folder out."
                    ) from None
    first = evidence.first
    if first is not None:
        run = RunFolder(first.path)
        evidence.split = read_rows(run.split)
        evidence.unreadable = read_rows(run.unreadable)
        data = first.config.get("data") or {}
        evidence.root, manifest = job_data_paths(first)
        if manifest:
            try:
                columns = read_manifest(manifest, evidence.root).columns
                evidence.columns = {p: dict(c) for p, c in columns.items()}
            except UserError as exc:
                evidence.notes.append(f"manifest columns not shown: {exc}")
        if data.get("group_by") == SOURCE:  # the collections, by name (never pseudonyms)
            for row in evidence.split:
                column = evidence.columns.setdefault(row["path"], {})
                column[SOURCE] = row.get("group", "").removeprefix(f"{SOURCE}:")
    return evidence


def read_rows(path: Path) -> list[dict[str, str]]:
    """A run's CSV file as rows; none when it is not there."""
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


def resolved(config: dict, key: str) -> Any:
    """One value of a run's ``.hydra/config.yaml`` with its interpolations resolved
    (``data.root: ${paths.data_dir}/...``), or None where they cannot be outside that run."""
    from omegaconf import OmegaConf

    from covidxr.utils.config import register_resolvers

    register_resolvers()
    try:
        return OmegaConf.select(OmegaConf.create(config), key, throw_on_resolution_failure=True)
    except Exception:
        return None


def job_data_paths(job: Job) -> tuple[Path | None, str | None]:
    """The folder a run's images were under (``data.root``, else its manifest's folder) and its
    manifest, as the run recorded them resolved in ``job.json``, else resolved from its config;
    None for what this machine cannot tell."""
    recorded = read_job_record(job).get("data") or {}
    root = recorded.get("root") or resolved(job.config, "data.root")
    manifest = recorded.get("manifest") or resolved(job.config, "data.manifest")
    if root is None and manifest is None:
        return None, None
    return data_root({"root": root, "manifest": manifest}), manifest
