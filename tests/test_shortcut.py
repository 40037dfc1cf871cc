"""The shortcut check catches a known shortcut: phantoms whose COVID images carry a border marker
score high with the lungs hidden, and the report says so; without the marker the gap appears."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_multirun import run_cli

from covidxr.reporting.compare import write_report
from covidxr.reporting.jobs import find_jobs
from covidxr.reporting.summary import summarize

# 96 px phantoms at 48 px, 8 epochs: about 40 s a run on 2 CPU cores.
RECIPE = [
    "-m",
    "experiment=smoke",
    "data.per_class=100",
    "data.phantom_size=96",
    "data.image_size=48",
    "data.batch_size=16",
    "trainer.max_epochs=8",
    "callbacks.early_stopping=null",
    "data.split_fractions=[0.6,0.2,0.2]",
    "data.occlude=none,lungs",
]


@pytest.mark.slow
@pytest.mark.parametrize("shortcut", [True, False])
def test_shortcut_check_on_phantoms(shortcut: bool, tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [*RECIPE, f"data.shortcut={str(shortcut).lower()}", f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["setting"]: r for r in summarize(find_jobs([sweep]))}
    visible, hidden = rows["data.occlude=none"], rows["data.occlude=lungs"]
    write_report([sweep], tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Shortcut check" in markdown
    if shortcut:  # the marker lies outside the lungs: hiding them changes little
        assert hidden["acc_mean"] >= 90
        assert "a shortcut" in markdown
    else:  # the only signal is in the lungs: hidden, the model is near chance
        assert visible["auroc_mean"] >= 75
        assert hidden["auroc_mean"] <= 65
        assert "depends on the lungs" in markdown
