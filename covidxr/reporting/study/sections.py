"""The page's sections, each computed from the study's own records: a ``Section`` holds its
HTML, its data for ``report.json``, and, when its input is missing, the one line that says so."""

from __future__ import annotations

import hashlib
import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from covidxr.data.splitting.privacy import PATIENT_WORDS
from covidxr.data.splitting.splits import SPLITS, UNLABELED
from covidxr.reporting.intervals import metric_samples, stratified_resamples, t_interval
from covidxr.reporting.paired import Record, auroc_interval
from covidxr.reporting.shortcut import shortcut_check
from covidxr.reporting.study import figures
from covidxr.reporting.study.clinical import (
    calibration_slope_intercept,
    net_benefit,
    operating_point,
)
from covidxr.reporting.study.evidence import StudyEvidence, read_job_record, read_rows
from covidxr.reporting.study.subgroups import SHOWN, binned, group_columns, subgroup_table
from covidxr.run_folder import ReportFolder, RunFolder
from covidxr.utils.errors import UserError
from covidxr.weights.registry import REGISTRY

#: A split file's parts in the order a reader follows them.
SPLIT_ORDER = (SPLITS[0], UNLABELED, *SPLITS[1:])
#: Columns never shown as values, only counted: patient keys, names, dates.
IDENTIFYING_WORDS = (*PATIENT_WORDS, "name", "date", "birth", "dob", "address", "phone")


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


def flow(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("flow", "Flow of images")
    if not ev.split:
        section.missing = "No split.csv in the runs: the flow of images is not known."
        return section
    per = Counter((r["split"], r["class"]) for r in ev.split)
    groups = Counter(r.get("group", r["path"]) for r in ev.split)
    merged = sum(n for n in groups.values() if n > 1)
    data = (ev.first.config.get("data") or {}) if ev.first else {}
    found = len(ev.split) + len(ev.unreadable)
    splits = [s for s in SPLIT_ORDER if any(k[0] == s for k in per)]
    classes = sorted({k[1] for k in per})
    boxes = [
        ("Found", f"{found} images"),
        ("Left out as unreadable", f"{len(ev.unreadable)} images"),
        (
            f"Near-duplicate groups (dedup={data.get('dedup', 'group')})",
            f"{merged} images in {sum(1 for n in groups.values() if n > 1)} groups kept "
            "within one split",
        ),
        *[(s, ", ".join(f"{c} {per[(s, c)]}" for c in classes)) for s in splits],
    ]
    path = figures.flow_figure(ReportFolder(opts.output).page_files / "flow.png", boxes)
    section.figures.append(path)
    section.data = {
        "found": found, "unreadable": len(ev.unreadable), "in_duplicate_groups": merged,
        "per_split": {s: {c: per[(s, c)] for c in classes} for s in splits},
        "dedup": data.get("dedup", "group"),
    }  # fmt: skip
    section.html = table(["split", *classes, "all"],
                         [[s, *[per[(s, c)] for c in classes], sum(per[(s, c)] for c in classes)]
                          for s in splits])  # fmt: skip
    return section


def characteristics(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("characteristics", "Characteristics per partition")
    if not ev.split:
        section.missing = "No split.csv in the runs."
        return section
    splits = [s for s in SPLIT_ORDER if any(r["split"] == s for r in ev.split)]
    parts = []
    formats = Counter((r["split"], Path(r["path"]).suffix.lower() or "(none)") for r in ev.split)
    parts.append("<h3>File formats</h3>" + table(
        ["format", *splits], [[f, *[formats[(s, f)] for s in splits]]
                              for f in sorted({f for _, f in formats})]))  # fmt: skip
    columns = group_columns(ev.columns, IDENTIFYING_WORDS)
    data: dict[str, Any] = {"formats": {f"{s}:{f}": n for (s, f), n in formats.items()}}
    headers = read_headers(ev)
    if headers:
        depths = Counter(
            (r["split"], headers[r["path"]][0]) for r in ev.split if r["path"] in headers
        )
        parts.append("<h3>Bits per sample (file header)</h3>" + table(
            ["bits", *splits], [[b, *[depths[(s, b)] for s in splits]]
                                for b in sorted({b for _, b in depths})]))  # fmt: skip
        sizes = {s: [headers[r["path"]][1:] for r in ev.split
                     if r["split"] == s and r["path"] in headers] for s in splits}  # fmt: skip
        parts.append("<h3>Image sizes (width x height, pixels)</h3>" + table(
            ["split", "smallest", "median", "largest"],
            [[s, *[_size(np.percentile(np.asarray(v), q, axis=0)) for q in (0, 50, 100)]]
             for s, v in sizes.items() if v]))  # fmt: skip
        data["bits"] = {f"{s}:{b}": n for (s, b), n in depths.items()}
        data["sizes"] = {s: [list(map(int, np.percentile(np.asarray(v), q, axis=0)))
                             for q in (0, 50, 100)] for s, v in sizes.items() if v}  # fmt: skip
    else:
        parts.append("<p>Bit depths and sizes not shown: the images are not under the run's "
                     "data root on this machine.</p>")  # fmt: skip
    for name in columns["shown"]:
        counts = Counter((r["split"], binned(ev.columns, name).get(r["path"], "(unknown)"))
                         for r in ev.split)  # fmt: skip
        values = sorted({v for _, v in counts})
        parts.append(
            f"<h3>{esc(name)}</h3>"
            + table([name, *splits], [[v, *[counts[(s, v)] for s in splits]] for v in values])
        )
        data[name] = {f"{s}:{v}": n for (s, v), n in counts.items()}
    for name, distinct in columns["counted"].items():
        parts.append(f"<p>{esc(name)}: {distinct} distinct values (identifiers: only counted)."
                     "</p>")  # fmt: skip
        data[f"{name}_distinct"] = distinct
    if not columns["shown"]:
        parts.append("<p>No manifest columns beyond path and label (site, sex, age...): only "
                     "classes and formats are shown.</p>")  # fmt: skip
    section.html, section.data = "".join(parts), data
    return section


def _size(wh: np.ndarray) -> str:
    return f"{int(wh[0])} x {int(wh[1])}"


def read_headers(ev: StudyEvidence) -> dict[str, tuple[int, int, int]]:
    """Bits, width and height of every image of the split, from the file headers; empty when
    the images are not on this machine."""
    from covidxr.data.formats.decode import image_header

    root = ev.data_root()
    if root is None or not ev.split or not (root / ev.split[0]["path"]).is_file():
        return {}
    headers = {}
    for row in ev.split:
        try:
            headers[row["path"]] = image_header(root / row["path"])
        except (OSError, ValueError):
            continue  # unreadable: the flow counts it
    return headers


def comparison(ev: StudyEvidence, opts: PageOptions, rows: Sequence[Mapping],
               tests: Sequence[Mapping]) -> Section:  # fmt: skip
    section = Section("comparison", "Comparison of settings")
    shown = ("acc", "sensitivity", "specificity", "auroc")
    body = [
        table(
            ["setting", "runs", *shown],
            [[r["setting"], r["runs"], *[_percent(r, m) for m in shown]] for r in rows],
        )
    ]
    paired = [t for t in tests if t.get("stage") == opts.stage]
    if paired:
        body.append("<h3>Paired tests against the best setting (Holm-adjusted)</h3>" + table(
            ["a", "b", "metric", "test", "seeds", "a - b", "p_holm", "verdict"],
            [[t["setting_a"], t["setting_b"], t["metric"], t["test"], t.get("seeds", ""),
              number(float(t["difference"]), 4), number(float(t["p_holm"]), 4), t["verdict"]]
             for t in paired]))  # fmt: skip
    folded = [r for r in rows if int(r.get("cv_folds", 0) or 0) > 1]
    if folded:
        body.append("<h3>Cross-validation (out-of-fold validation, %)</h3><p>Mean over folds "
                    "[95% Nadeau-Bengio corrected interval].</p>" + table(
            ["setting", "folds", *shown],
            [[r["setting"], r["cv_folds"], *[
                number(float(r[f"cv_{m}_mean"]), 2) +
                interval(float(r[f"cv_{m}_ci_low"]), float(r[f"cv_{m}_ci_high"]), 1)
                for m in shown]] for r in folded]))  # fmt: skip
    stability = rank_stability(ev, opts)
    if stability:
        body.append(
            "<h3>Rank stability</h3><p>Share of bootstrap resamples of the shared "
            f"{opts.stage} images (and of seeds) in which each setting ranks first by "
            "AUROC.</p>"
            + table(["setting", "ranks first"], [[k, f"{v:.1%}"] for k, v in stability.items()])
        )
    friedman = friedman_test(ev, opts)
    if friedman:
        body.append(
            f"<p>Friedman test across {friedman['blocks']} seeds/folds of "
            f"{friedman['settings']} settings (AUROC): chi-square "
            f"{friedman['statistic']:.3f}, p = {friedman['p_value']:.4g}.</p>"
        )
    elif len(ev.settings) >= 3:
        body.append("<p>Friedman test: needs at least two seeds shared by every setting.</p>")
    section.html = "".join(body)
    section.data = {"rows": list(rows), "paired_tests": list(paired),
                    "rank_stability": stability, "friedman": friedman}  # fmt: skip
    if len(ev.settings) < 2:
        section.html += "<p>One setting: nothing to compare.</p>"
    return section


def _percent(row: Mapping, metric: str) -> str:
    mean = float(row[f"{metric}_mean"])
    if math.isnan(mean):
        return "–"
    low = float(row[f"{metric}_ci_low"])
    return f"{mean:.2f}" + ("" if math.isnan(low) else
                            f" [{low:.1f}, {float(row[f'{metric}_ci_high']):.1f}]")  # fmt: skip


def _shared(ev: StudyEvidence, stage: str) -> tuple[list[str], dict[str, list[Record]]]:
    """Per setting, its runs' records restricted to the images every run scored."""
    records = {s: [r for j in ev.runs_of(s) if (r := ev.record(j, stage))] for s in ev.settings}
    records = {s: rs for s, rs in records.items() if rs}
    common = set.intersection(*(set(r.paths) for rs in records.values() for r in rs)) if records \
        else set()  # fmt: skip
    return sorted(common), records


def rank_stability(ev: StudyEvidence, opts: PageOptions) -> dict[str, float]:
    common, records = _shared(ev, opts.stage)
    if len(records) < 2 or len(common) < 4:
        return {}
    index = {s: [[r.paths.index(p) for p in common] for r in rs] for s, rs in records.items()}
    first = next(iter(records.values()))[0]
    targets = first.targets[index[next(iter(records))][0]]
    rows = stratified_resamples(targets, opts.resamples, seed=0)
    rng = np.random.default_rng(0)
    scores = {}
    for s, rs in records.items():
        per_seed = [metric_samples(r.probs[idx][rows], targets[rows], r.positive)["auroc"]
                    for r, idx in zip(rs, index[s], strict=True)]  # fmt: skip
        pick = rng.integers(0, len(per_seed), size=(opts.resamples, len(per_seed)))
        stacked = np.asarray(per_seed)  # [seeds, resamples]
        scores[s] = np.nanmean(stacked[pick.T, np.arange(opts.resamples)], axis=0)
    names = list(scores)
    matrix = np.nan_to_num(np.stack([scores[n] for n in names]), nan=-1)
    winners = matrix.argmax(axis=0)
    return {n: float((winners == i).mean()) for i, n in enumerate(names)}


def friedman_test(ev: StudyEvidence, opts: PageOptions) -> dict[str, float] | None:
    """Friedman's test across seeds (or folds) when three or more settings share them."""
    metric = f"{opts.stage}/auroc"
    by_setting = {s: {(j.seed, j.fold): j.metrics.get(metric) for j in ev.runs_of(s)}
                  for s in ev.settings}  # fmt: skip
    if len(by_setting) < 3:
        return None
    blocks = set.intersection(*(set(v) for v in by_setting.values()))
    blocks = sorted(b for b in blocks if all(by_setting[s][b] is not None for s in by_setting))
    if len(blocks) < 2:
        return None
    samples = [[by_setting[s][b] for b in blocks] for s in by_setting]
    result = scipy.stats.friedmanchisquare(*samples)
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue),
            "blocks": len(blocks), "settings": len(by_setting)}  # fmt: skip


def _curve_records(ev: StudyEvidence, stage: str) -> list[tuple[str, Record]]:
    """Each setting's first run (lowest seed) on ``stage``."""
    out = []
    for s in ev.settings:
        for job in ev.runs_of(s):
            if (record := ev.record(job, stage)) is not None:
                out.append((f"{s} (seed {job.seed})", record))
                break
    return out


def curves(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("curves", "Discrimination and calibration")
    records = _curve_records(ev, opts.stage)
    if not records:
        section.missing = f"No predictions_{opts.stage}.csv in the runs: no curves."
        return section
    lines, rows = [], []
    for label, record in records:
        scores, positive = binary(record)
        auc, low, high = auroc_interval(positive, scores)
        slope, intercept = calibration_slope_intercept(scores, positive)
        lines.append({"label": f"{label}: {number(auc)}{interval(low, high)}", "scores": scores,
                      "positive": positive})  # fmt: skip
        rows.append({"setting": label, "auroc": auc, "auroc_ci": (low, high),
                     "calibration_slope": slope, "calibration_intercept": intercept})  # fmt: skip
    files = ReportFolder(opts.output).page_files
    section.figures += [
        figures.roc_pr_figure(files / "roc_pr.png", lines),
        figures.reliability_figure(files / "reliability.png", lines),
    ]
    positive_name = records[0][1].classes[records[0][1].positive] if records[0][1].classes else ""
    section.html = (f"<p>Positive class: {esc(positive_name)} (one-vs-rest).</p>" + table(
        ["setting", "AUROC [DeLong 95%]", "calibration slope", "calibration intercept"],
        [[r["setting"], number(r["auroc"]) + interval(*r["auroc_ci"]),
          number(r["calibration_slope"], 2), number(r["calibration_intercept"], 2)]
         for r in rows]))  # fmt: skip
    section.data = {"rows": rows}
    return section


def operating(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("operating_point", "Operating point")
    records = _curve_records(ev, opts.stage)
    if not records:
        section.missing = f"No predictions_{opts.stage}.csv in the runs."
        return section
    job = ev.runs_of(ev.settings[0])[0]
    threshold = job.metrics.get("val/threshold") if job.metrics else None
    source, prespecified = "0.5 (the arg-max of two classes)", True
    if threshold is not None:
        source, prespecified = "chosen on validation for a target sensitivity", False
    threshold = 0.5 if threshold is None else float(threshold)
    rows, data = [], []
    for stage in (opts.stage, "external"):
        for label, record in _curve_records(ev, stage):
            scores, positive = binary(record)
            prevalence = opts.prevalence if opts.prevalence is not None else float(positive.mean())
            point = operating_point(scores, positive, threshold, prevalence, source, prespecified)
            data.append({"stage": stage, "setting": label, **point.as_dict()})
            rows.append([stage, label, f"{point.sensitivity:.3f}" + interval(*point.sensitivity_ci),
                         f"{point.specificity:.3f}" + interval(*point.specificity_ci),
                         number(point.ppv), number(point.npv)])  # fmt: skip
    mark = "prespecified" if prespecified else "not prespecified (chosen after the test was scored)"
    body = [f"<p>Threshold {threshold:g} on p(positive): {esc(source)}; <b>{mark}</b>.</p>"]
    if opts.prevalence is None:
        body.append("<p>PPV and NPV below are at each set's own prevalence, which is not a "
                    "clinical one (the database holds ~26% COVID): give <code>--prevalence P</code>"
                    " for a clinical prevalence and the decision curve.</p>")  # fmt: skip
    body.append(table(["split", "setting", "sensitivity [Wilson 95%]", "specificity [Wilson 95%]",
                       "PPV", "NPV"], rows))  # fmt: skip
    if opts.prevalence is not None:
        scores, positive = binary(records[0][1])
        curve = net_benefit(scores, positive, np.linspace(0.01, 0.6, 60), opts.prevalence)
        section.figures.append(
            figures.decision_curve_figure(
                ReportFolder(opts.output).page_files / "decision_curve.png", curve, opts.prevalence
            )
        )
        section.data["decision_curve"] = {k: v.tolist() for k, v in curve.items()}
        body.append(
            f"<p>Decision curve of {esc(records[0][0])} at prevalence {opts.prevalence:g}.</p>"
        )
    section.html = "".join(body)
    section.data |= {"threshold": threshold, "source": source, "prespecified": prespecified,
                     "prevalence": opts.prevalence, "points": data}  # fmt: skip
    return section


def subgroups(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("subgroups", "Subgroups")
    records = _curve_records(ev, opts.stage)
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


def external(ev: StudyEvidence, opts: PageOptions) -> Section:
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
        shift = dataset_shift(pairs[0][1], pairs[0][2], ev.data_root(), job.external_root)
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
    shortcut = shortcut_check(_rows_for_shortcut(ev, opts.stage), ev.jobs)
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


def _rows_for_shortcut(ev: StudyEvidence, stage: str) -> list[dict]:
    from covidxr.reporting.summary import summarize

    return summarize(ev.jobs, stage)


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
        shift[f"{name}_size"] = _size(np.median([g.shape[::-1] for g in greys], axis=0))
    return shift


def model_card(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("model_card", "Model card")
    job = ev.first
    if job is None:
        section.missing = "No finished run: no model to describe."
        return section
    config, record = job.config, read_job_record(job)
    backbone = config.get("backbone") or {}
    spec = REGISTRY.get(backbone.get("key", ""))
    data_cfg, machine = config.get("data") or {}, record.get("machine") or {}
    split = RunFolder(job.path).split
    card = {
        "Model details": {
            "architecture": "ResNet50 (torchvision) with a "
            f"{(config.get('model') or {}).get('head', 'linear')} head",
            "weight key": backbone.get("key"),
            "weight source": spec.source if spec else backbone.get("path"),
            "weight sha256": spec.published_hash if spec else None,
            "weight licence": spec.licence if spec else "the file's own",
            "covidxr": machine.get("covidxr"), "torch": machine.get("torch"),
            "lightning": machine.get("lightning"),
            "git commit": machine.get("git_commit"),
            "uncommitted changes": machine.get("git_dirty"),
        },
        "Training and data": {
            "classes": ", ".join(data_cfg.get("classes") or ev.classes),
            "input size": data_cfg.get("image_size"),
            "mean/std": f"{spec.mean}/{spec.std}" if spec else None,
            "seeds": ", ".join(str(j.seed) for j in ev.done),
            "split.csv sha256": hashlib.sha256(split.read_bytes()).hexdigest()
            if split.is_file() else None,
            "optimizer": (config.get("optimizer") or {}).get("_target_"),
            "learning rate": (config.get("optimizer") or {}).get("lr"),
            "epochs": (config.get("trainer") or {}).get("max_epochs"),
            "augmentation": (config.get("augment") or {}).get("name", "see config"),
        },
        "Machine": {
            "torch CPU capability": machine.get("cpu_capability"),
            "threads": machine.get("threads"), "GPU": machine.get("gpu"),
        },
        "Intended use (for the author)": {"intended use": "FOR THE AUTHOR: who, where, for what"},
        "Ethical considerations (for the author)": {"ethics": "FOR THE AUTHOR"},
    }  # fmt: skip
    parts = []
    for title, fields in card.items():
        parts.append(
            f"<h3>{esc(title)}</h3>"
            + table(
                ["field", "value"],
                [[k, "not recorded" if v is None else v] for k, v in fields.items()],
            )
        )
    section.html, section.data = "".join(parts), card
    return section


#: The options whose sweep is a label-efficiency study.
LABEL_OPTIONS = ("data.train_fraction", "data.train_images")


def label_efficiency(ev: StudyEvidence, opts: PageOptions) -> Section:
    """Test AUROC against the number of labeled training images, one line per other setting,
    and the paired tests between those settings at each fraction."""
    from covidxr.reporting.paired_runs import paired_tests
    from covidxr.reporting.summary import summarize

    section = Section("label_efficiency", "Label efficiency")
    option = next((k for k in LABEL_OPTIONS if k in ev.keys), None)
    if option is None:
        section.missing = ("The runs do not vary data.train_fraction or data.train_images "
                           "(experiment=label_efficiency): no label-efficiency curve.")  # fmt: skip
        return section
    others = [k for k in ev.keys if k != option]
    by_line: dict[str, dict[float, list[tuple[int, float]]]] = {}
    for job in ev.done:
        line = " ".join(f"{k}={job.override(k)}" for k in others) or "all"
        labeled = sum(1 for r in read_rows(RunFolder(job.path).split) if r["split"] == "train")
        value = job.metrics.get(f"{opts.stage}/auroc")
        if value is not None and not math.isnan(value):
            by_line.setdefault(line, {}).setdefault(float(job.override(option)), []).append(
                (labeled, value)
            )
    points = {
        line: sorted((float(np.mean([n for n, _ in v])), *t_interval([a for _, a in v]))
                     for v in fractions.values())
        for line, fractions in by_line.items()
    }  # fmt: skip
    path = figures.label_efficiency_figure(
        ReportFolder(opts.output).page_files / "label_efficiency.png", points
    )
    section.figures.append(path)
    rows, tests = [], []
    for fraction in sorted({f for v in by_line.values() for f in v}):
        jobs = [j for j in ev.done if float(j.override(option)) == fraction]
        rows += [[fraction, r["setting"], r["runs"], _percent(r, "auroc")]
                 for r in summarize(jobs, opts.stage)]  # fmt: skip
        if len({j.override(k) for j in jobs for k in others}) > 1:
            summary = summarize(jobs, opts.stage)
            tests += [t | {"fraction": fraction} for t in paired_tests(jobs, summary, opts.stage)]
    section.html = table([option, "setting", "runs", f"{opts.stage} AUROC %"], rows)
    if tests:
        section.html += "<h3>Paired tests per fraction (against the best there)</h3>" + table(
            [option, "a", "b", "metric", "test", "seeds", "a - b", "p_holm", "verdict"],
            [[t["fraction"], t["setting_a"], t["setting_b"], t["metric"], t["test"], t["seeds"],
              number(float(t["difference"]), 4), number(float(t["p_holm"]), 4), t["verdict"]]
             for t in tests])  # fmt: skip
    section.data = {"option": option, "points": points, "paired_tests": tests}
    return section
