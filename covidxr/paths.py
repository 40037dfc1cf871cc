"""Where the project's own files live (a run folder's files: ``covidxr.run_folder``)."""

from __future__ import annotations

from pathlib import Path

#: The checkout (an editable install): conf/ and the default data/ folder sit here.
REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
