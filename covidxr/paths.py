"""Where the project's own files, and the optional real test data, live."""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout (an editable install): conf/ and the default data/ folder sit here.
REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
#: 2,000 real chest X-rays kept beside the checkout for tests and benchmarks (never committed).
DEFAULT_REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "covid-radiography-224"


def checkpoint_run_dir(ckpt_path: str | os.PathLike) -> Path:
    """``<run>`` for ``<run>/checkpoints/<name>.ckpt``: where its split.csv and metrics.json are."""
    return Path(ckpt_path).resolve().parent.parent


def real_data_dir() -> Path | None:
    """The real test set (``COVIDXR_REAL_DATA`` or the checkout's neighbour), or None if absent."""
    path = Path(os.environ.get("COVIDXR_REAL_DATA", DEFAULT_REAL_DATA))
    return path if path.is_dir() else None
