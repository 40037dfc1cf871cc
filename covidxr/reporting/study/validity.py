"""The sections about whether to trust the numbers elsewhere: subgroups, external
validation with the dataset shift, and the shortcut check."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from covidxr.reporting.intervals import metric_samples, stratified_resamples
from covidxr.reporting.paired import Record
from covidxr.reporting.shortcut import shortcut_check
from covidxr.reporting.study.data_sections import IDENTIFYING_WORDS, size_text
from covidxr.reporting.study.evidence import StudyEvidence
from covidxr.reporting.study.markup import (
    PageOptions,
    Section,
    esc,
    interval,
    number,
    table,
)
from covidxr.reporting.study.performance import curve_records
from covidxr.reporting.study.subgroups import SHOWN, binned, group_columns, subgroup_table
from covidxr.utils.errors import UserError


def subgroups(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("subgroups", "Subgroups")
    records = curve_records(ev, opts.stage)
    columns = group_columns(ev.columns, IDENTIFYING_WORDS)["shown"]
    if not records or not columns:
        section.missing = (
            ("No group column (a manifest with site, source, scanner, sex...): no subgroups.")
            if records
            else f"No predictions_{opts.stage}.csv."
        )
        return section
    label, record = records[0]
    body, data = (
        [
            f"<p>{esc(label)}; metrics with their bootstrap 95% intervals; "
            "<b>!</b> marks a subgroup whose interval leaves out the overall value; a "
            "subgroup with fewer than 10 images of a class is n/a.</p>"
        ],
        {},
    )
    for name in columns:
        values = binned(ev.columns, name)
        result = subgroup_table([values.get(p, "") for p in record.paths], record.probs,
                                record.targets, record.positive, opts.resamples)  # fmt: skip
        rows = [[r["value"], r["images"], *[
            "n/a" if r["small"] else number(r[m]) + interval(*r[f"{m}_ci"]) +
            (" !" if r[f"{m}_flag"] else "") for m in SHOWN]] for r in result["rows"]]  # fmt: skip
        het = result["heterogeneity"]
        body.append(
            f"<h3>{esc(name)}</h3>"
            + table([name, "images", *SHOWN], rows)
            + f"<p>Heterogeneity ({esc(het['test'])}): p = {number(het['p_value'], 4)}.</p>"
        )
        data[name] = result
    section.html, section.data = "".join(body), data
    return section


def external(ev: StudyEvidence, opts: PageOptions, rows: Sequence[Mapping]) -> Section:
    """``rows``: the comparison's rows (``summarize``), which the shortcut check reads."""
    section = Section("external", "External validation and shortcuts")
    pairs = []
    for s in ev.settings:
        for job in ev.runs_of(s):
            internal, outside = ev.record(job, opts.stage), ev.record(job, "external")
            if internal is not None and outside is not None:
                pairs.append((f"{s} (seed {job.seed})", internal, outside))
    body, data = [], {"pairs": []}
    if pairs:
        rows = []
        for label, internal, outside in pairs:
            drop = auroc_drop(internal, outside, opts.resamples)
            data["pairs"].append({"setting": label, **drop})
            rows.append(
                [
                    label,
                    number(drop["internal"]),
                    number(drop["external"]),
                    number(drop["drop"]) + interval(drop["drop_low"], drop["drop_high"]),
                ]
            )
        body.append(table(["setting", f"{opts.stage} AUROC", "external AUROC",
                           "drop [bootstrap 95%]"], rows))  # fmt: skip
        job = next(j for j in ev.done if ev.record(j, "external") is not None)
        shift = dataset_shift(pairs[0][1], pairs[0][2], ev.root, job.external_root)
        data["shift"] = shift
        body.append(
            f"<p>Dataset shift: positive share {shift['internal_positive']:.1%} internal "
            f"against {shift['external_positive']:.1%} external; images "
            f"{shift['internal_images']} against {shift['external_images']}.</p>"
        )
        if "external_grey_mean" in shift:
            body.append(table(["", "internal", "external"], [
                ["grey level mean (0-255)", f"{shift['internal_grey_mean']:.1f}",
                 f"{shift['external_grey_mean']:.1f}"],
                ["grey level std", f"{shift['internal_grey_std']:.1f}",
                 f"{shift['external_grey_std']:.1f}"],
                ["median size (w x h)", shift["internal_size"],
                 shift["external_size"]]]))  # fmt: skip
        else:
            body.append("<p>Intensity statistics not shown: the images of both sets are not on "
                        "this machine.</p>")  # fmt: skip
        worst = max(data["pairs"], key=lambda d: d["drop"] if not math.isnan(d["drop"]) else -1)
        if not math.isnan(worst["drop"]) and worst["drop_low"] > 0.05:
            body.append(
                f"<p class='warn'>Do not trust the internal numbers for other hospitals: "
                f"the AUROC drops by {worst['drop']:.3f} on external images.</p>"
            )
    else:
        body.append(
            "<p>No external evaluation in these runs (<code>covidxr-eval "
            "ckpt_path=... external=FOLDER</code>, then give its folder too).</p>"
        )
    shortcut = shortcut_check(rows, ev.jobs)
    if shortcut:
        text = "\n".join(shortcut)
        data["shortcut"] = text
        body.append(f"<pre>{esc(text)}</pre>")
        if "a shortcut" in text:
            body.append(
                "<p class='warn'>Do not trust this model: it keeps its AUROC with the "
                "lungs hidden.</p>"
            )
    else:
        body.append(
            "<p>No shortcut check in these runs (<code>experiment=shortcut_audit</code>).</p>"
        )
    if not pairs and not shortcut:
        section.missing = "No external evaluation and no shortcut check in these runs."
    section.html, section.data = "".join(body), data
    return section


def auroc_drop(internal: Record, outside: Record, resamples: int) -> dict[str, float]:
    """AUROC internal - external with a bootstrap interval (the two sets resampled apart)."""
    values = []
    for record in (internal, outside):
        rows = stratified_resamples(record.targets, resamples, seed=0)
        values.append(metric_samples(record.probs[rows], record.targets[rows],
                                     record.positive)["auroc"])  # fmt: skip
    point = [float(metric_samples(r.probs[None], r.targets[None], r.positive)["auroc"][0])
             for r in (internal, outside)]  # fmt: skip
    diff = values[0] - values[1]
    diff = diff[~np.isnan(diff)]
    low, high = np.quantile(diff, [0.025, 0.975]) if len(diff) else (math.nan, math.nan)
    return {"internal": point[0], "external": point[1], "drop": point[0] - point[1],
            "drop_low": float(low), "drop_high": float(high)}  # fmt: skip


def dataset_shift(
    internal: Record,
    outside: Record,
    internal_root: Path | None,
    external_root: Path | None,
    sample: int = 200,
) -> dict[str, Any]:
    """Class balance and size of both sets; where the images of both are on this machine, the
    grey level mean and std and the median image size of up to ``sample`` images of each."""
    from covidxr.data.formats.decode import read_gray

    shift: dict[str, Any] = {
        "internal_positive": float((internal.targets == internal.positive).mean()),
        "external_positive": float((outside.targets == outside.positive).mean()),
        "internal_images": len(internal.targets),
        "external_images": len(outside.targets),
    }
    images = {}
    for name, record, root in (("internal", internal, internal_root),
                               ("external", outside, external_root)):  # fmt: skip
        step = max(1, len(record.paths) // sample)
        paths = [root / p for p in record.paths[::step]] if root else []
        try:
            images[name] = [read_gray(p) for p in paths] if paths else None
        except (UserError, OSError):  # not on this machine, or unreadable: counted in the flow
            images[name] = None
        if images[name] is None:
            return shift
    for name, greys in images.items():
        shift[f"{name}_grey_mean"] = float(np.mean([g.mean() for g in greys]))
        shift[f"{name}_grey_std"] = float(np.mean([g.std() for g in greys]))
        shift[f"{name}_size"] = size_text(np.median([g.shape[::-1] for g in greys], axis=0))
    return shift
