"""What every section of the page is made of: a ``Section`` (its HTML, its data for
``report.json``, or the one line that says its input is missing), the page's options, and the
escaped HTML pieces the sections share."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidxr.reporting.paired import Record


@dataclass
class Section:
    key: str
    title: str
    html: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    missing: str | None = None  # why the section has nothing to show
    figures: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class PageOptions:
    output: Path  # the report folder; figures go to its report_files/
    stage: str = "test"
    prevalence: float | None = None
    failures: int = 4  # most confident false positives and false negatives shown
    resamples: int = 1000


def esc(value: object) -> str:
    return html.escape(str(value))


def number(value: float | None, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def interval(low: float, high: float, digits: int = 3) -> str:
    return "" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def binary(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """p(positive class) and whether each image is of it: one-vs-rest for 3-4 classes."""
    return record.scores, record.targets == record.positive
