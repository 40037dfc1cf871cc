"""Where a job's time goes: wall seconds per named phase, summed over repeats. A job's phases are
written to its run folder (``timings.json``); ``covidxr-bench recipe`` prints them beside the
wall time of the whole process, so what no phase covers (imports, start-up) shows too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Seconds per phase. A phase inside another is named by its caller with the outer name as
    prefix (``fit/validation``), so only names without ``/`` add up to the job's time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds.clear()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)


#: This process's stopwatch; every job resets it when it starts (a multirun's jobs share a process).
STOPWATCH = Stopwatch()
