"""Every metric per value of a group column (site, source, scanner, a manifest column), with its
bootstrap interval, a test of heterogeneity across the values, and the subgroups whose interval
leaves out the overall value flagged. Patients are never a subgroup: a patient column is only
counted."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from covidxr.reporting.intervals import bootstrap_intervals, metric_samples

#: Fewer images of a class than this in a subgroup: its metrics are shown as n/a with the count.
MIN_PER_CLASS = 10
SHOWN = ("acc", "sensitivity", "specificity", "auroc")


def subgroup_table(
    values: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    positive: int,
    resamples: int = 1000,
) -> dict:
    """``{"rows": [...], "heterogeneity": {...}}`` for one group column; ``values[i]`` is image
    i's value of it (empty: unknown)."""
    values = np.asarray([v or "(unknown)" for v in values])
    overall = {
        m: float(v[0]) for m, v in metric_samples(probs[None], targets[None], positive).items()
    }
    rows = []
    for value in sorted(set(values)):
        inside = values == value
        t, p = targets[inside], probs[inside]
        counts = {int(c): int((t == c).sum()) for c in np.unique(targets)}
        row: dict = {"value": value, "images": int(inside.sum()), "per_class": counts}
        small = min(counts.values()) < MIN_PER_CLASS
        point = metric_samples(p[None], t[None], positive)
        ci = {} if small else bootstrap_intervals(p, t, positive, "g", resamples)
        for m in SHOWN:
            low, high = ci.get(f"g/{m}_ci_low", math.nan), ci.get(f"g/{m}_ci_high", math.nan)
            row[m] = math.nan if small else float(point[m][0])
            row[f"{m}_ci"] = (low, high)
            row[f"{m}_flag"] = bool(
                not small and not math.isnan(low) and not (low <= overall[m] <= high)
            )
        row["small"] = small
        rows.append(row)
    return {"rows": rows, "overall": {m: overall[m] for m in SHOWN}, "heterogeneity": heterogeneity(
        values, probs.argmax(axis=1) == targets
    )}  # fmt: skip


def heterogeneity(values: np.ndarray, correct: np.ndarray) -> dict[str, float | str]:
    """Chi-square test that accuracy is the same in every subgroup (correct/wrong by value)."""
    table = np.array([[(correct & (values == v)).sum(), (~correct & (values == v)).sum()]
                      for v in sorted(set(values))])  # fmt: skip
    table = table[table.sum(axis=1) > 0]
    if len(table) < 2 or (table.sum(axis=0) == 0).any():
        return {"test": "chi-square (accuracy)", "statistic": math.nan, "p_value": math.nan}
    result = scipy.stats.chi2_contingency(table)
    return {"test": "chi-square (accuracy)", "statistic": float(result.statistic),
            "p_value": float(result.pvalue), "dof": int(result.dof)}  # fmt: skip


def group_columns(columns: Mapping[str, Mapping[str, str]], patient_words: Sequence[str]) -> dict:
    """The manifest columns fit to show as subgroups (2 to 20 values), and those only counted
    (patient identifiers): ``{"shown": [...], "counted": {column: distinct values}}``."""
    names = sorted({c for row in columns.values() for c in row} - {"path", "label", "split"})
    shown, counted = [], {}
    for name in names:
        distinct = set(binned(columns, name).values())
        if any(word in name.lower() for word in patient_words):
            counted[name] = len(distinct)
        elif 2 <= len(distinct) <= 20:
            shown.append(name)
    return {"shown": shown, "counted": counted}


def binned(columns: Mapping[str, Mapping[str, str]], name: str) -> dict[str, str]:
    """A column's value per image; numbers with many values (age) in decades."""
    values = {p: row.get(name, "") for p, row in columns.items()}
    try:
        numbers = {p: float(v) for p, v in values.items() if v}
    except ValueError:
        return values
    if len(set(numbers.values())) <= 20:
        return values
    return {p: f"{int(v // 10 * 10)}-{int(v // 10 * 10) + 9}" for p, v in numbers.items()}
