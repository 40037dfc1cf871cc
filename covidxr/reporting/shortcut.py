"""The shortcut check: each setting with the lungs visible against the same with them hidden
(``data.occlude``), as the share of its above-chance AUROC that needs no lungs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from covidxr.reporting.jobs import Job, varied_keys


def shortcut_check(rows: Sequence[Mapping], jobs: Sequence[Job]) -> list[str]:
    """Markdown lines comparing each setting with lungs visible and hidden (``data.occlude``)."""
    keys = varied_keys(jobs)
    if "data.occlude" not in keys:
        return []
    lines = [
        "## Shortcut check",
        "",
        "The same recipe with the lungs visible (`data.occlude=none`) and hidden. AUROC kept = "
        "(hidden - 50) / (visible - 50): the share of the above-chance signal that needs no lungs.",
        "",
        "| setting | occlude | acc | auroc | AUROC kept | reading |",
        "|---|---|---|---|---|---|",
    ]

    def base(setting: str) -> str:
        return " ".join(p for p in setting.split() if not p.startswith("data.occlude="))

    visible = {base(str(r["setting"])): r for r in rows if "data.occlude=none" in str(r["setting"])}
    for row in rows:
        setting = str(row["setting"])
        if "data.occlude=none" in setting or "data.occlude=" not in setting:
            continue
        reference = visible.get(base(setting))
        if reference is None:
            continue
        above = float(reference["auroc_mean"]) - 50
        kept = (float(row["auroc_mean"]) - 50) / above if above > 0 else math.nan
        if math.isnan(kept):
            reading = "no signal with the lungs visible either"
        elif kept >= 0.8:
            reading = "**most of the score needs no lungs: a shortcut (source, markers, borders)**"
        elif kept >= 0.4:
            reading = "part of the score needs no lungs"
        else:
            reading = "the score depends on the lungs"
        occlude = setting.split("data.occlude=")[1].split()[0]
        for r, label in ((reference, "none"), (row, occlude)):
            lines.append(
                f"| {base(setting) or '-'} | {label} | {float(r['acc_mean']):.1f} | "
                f"{float(r['auroc_mean']):.1f} | {'' if r is reference else f'{kept:.0%}'} | "
                f"{'' if r is reference else reading} |"
            )
    return [*lines, ""]
