"""Figures written to files, the one way: a headless backend, the file written whole, no leak."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from covidxr.utils.io import atomic_path


@contextlib.contextmanager
def saved_figure(path: str | os.PathLike, *grid: int, **subplots: Any) -> Iterator[Any]:
    """The axes of ``plt.subplots(*grid, **subplots)`` for the block; then the figure is laid
    out, saved to ``path`` and closed.

    The figure is closed even when the block fails, and ``path`` only appears once complete.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*grid, **subplots)
    try:
        yield axes
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
