"""Where the project's own files live, and a run folder's files relative to its checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout (an editable install): conf/ and the default data/ folder sit here.
REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
#: In a run folder: the final metrics, and the error of a job that failed (sweeps go on).
METRICS_FILE = "metrics.json"
FAILED_FILE = "failed.json"
#: The record of a stage's predictions, one row per image in dataset order.
PREDICTIONS_FILE = "predictions_{stage}.csv"
#: The settings (overrides) a run folder's job was started with: another job never continues it.
JOB_FILE = "job.json"


def checkpoint_run_dir(ckpt_path: str | os.PathLike) -> Path:
    """``<run>`` for ``<run>/checkpoints/<name>.ckpt``: where its split.csv and metrics.json are."""
    return Path(ckpt_path).resolve().parent.parent
