"""A CSV logger that continues a run's ``metrics.csv`` when the run is resumed in its folder.

Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; a preempted job that
is started again in the same folder (``resume=auto``) would lose the epochs before the
interruption. This one appends, merging the columns, so the file stays one continuous log.
"""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from covidxr.utils.compat import AppendingExperimentWriter


class ContinuingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the ``metrics.csv`` already in its folder."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
