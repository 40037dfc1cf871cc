"""Comparing runs: ``covidxr-report``'s files for the jobs of one or more sweeps.

Finding the jobs and their settings is ``jobs``, the rows ``summary``, the paired tests
``paired_runs``, the shortcut check ``shortcut``, the markdown and figure ``render``. Powers
``covidxr-report`` and ``notebooks/compare_runs.ipynb``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from covidxr.reporting.jobs import find_jobs
from covidxr.reporting.paired import PAIRED_COLUMNS
from covidxr.reporting.paired_runs import PAIRED_METRICS, paired_tests
from covidxr.reporting.render import plot_report, report_markdown
from covidxr.reporting.study.markup import PageOptions
from covidxr.reporting.study.page import write_study_page
from covidxr.reporting.summary import summarize
from covidxr.run_folder import ReportFolder
from covidxr.utils.errors import MissingFileError
from covidxr.utils.io import atomic_write


def write_report(
    folders: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    stage: str = "test",
    wandb: bool = False,
    prevalence: float | None = None,
) -> list[dict]:
    """Write ``report.md``, ``report.csv``, ``report.png``, ``paired_tests.csv`` and the study page
    (``report.html``, ``report.json``, the checklists) for the jobs in ``folders``; ``wandb``: also
    as a W&B run in the jobs' group; ``prevalence``: the page's PPV, NPV and decision curve."""
    jobs = find_jobs(folders)
    if not jobs:
        raise MissingFileError(
            f"No run folders (with .hydra/config.yaml) under {list(map(str, folders))}."
        )
    rows = summarize(jobs, stage)
    tests = [t | {"stage": stage} for t in paired_tests(jobs, rows, stage)]
    external_rows = [
        {**r, **{f"{m}_mean": r[f"external_{m}_mean"] for m in PAIRED_METRICS}} for r in rows
    ]
    tests += [t | {"stage": "external"} for t in paired_tests(jobs, external_rows, "external")]
    report = ReportFolder(Path(output))
    with atomic_write(report.markdown) as fh:
        fh.write(report_markdown(rows, jobs, stage, tests))
    if tests:
        with atomic_write(report.paired_tests) as fh:
            writer = csv.DictWriter(fh, fieldnames=[*PAIRED_COLUMNS, "stage"])
            writer.writeheader()
            writer.writerows(tests)
    with atomic_write(report.table) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_report(rows, report.figure)
    write_study_page(jobs, PageOptions(report.path, stage, prevalence), rows, tests)
    if wandb:
        from covidxr.reporting.wandb_plots import log_report

        settings = (jobs[0].config.get("logger") or {}).get("wandb") or {}
        log_report(
            rows, tests, report.path, settings.get("group"), settings.get("project", "covidxr")
        )
    return rows
