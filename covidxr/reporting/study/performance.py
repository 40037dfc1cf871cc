"""The sections about how well the settings do: the comparison (paired tests, rank
stability, Friedman), the curves and calibration, the operating point and its clinical numbers,
the label-efficiency curve."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from covidxr.reporting.intervals import metric_samples, stratified_resamples, t_interval
from covidxr.reporting.jobs import Job
from covidxr.reporting.paired import Record, auroc_interval
from covidxr.reporting.study import figures
from covidxr.reporting.study.clinical import (
    calibration_slope_intercept,
    net_benefit,
    operating_point,
)
from covidxr.reporting.study.evidence import StudyEvidence, read_rows
from covidxr.reporting.study.markup import (
    PageOptions,
    Section,
    binary,
    esc,
    interval,
    number,
    table,
)
from covidxr.run_folder import ReportFolder, RunFolder


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


def first_runs(ev: StudyEvidence, stage: str) -> list[tuple[str, Job, Record]]:
    """Each setting's first run (lowest seed) with predictions on ``stage``: setting, run,
    record."""
    out = []
    for s in ev.settings:
        for job in ev.runs_of(s):
            if (record := ev.record(job, stage)) is not None:
                out.append((s, job, record))
                break
    return out


def curve_records(ev: StudyEvidence, stage: str) -> list[tuple[str, Record]]:
    """Each setting's first run on ``stage``, labelled ``<setting> (seed <n>)``."""
    return [(f"{s} (seed {job.seed})", record) for s, job, record in first_runs(ev, stage)]


def best_run(ev: StudyEvidence, stage: str) -> tuple[str, Job, Record] | None:
    """Of the settings' first runs, the one with the highest AUROC on ``stage`` (the first of
    equals; an undefined AUROC ranks last)."""

    def auroc(run: tuple[str, Job, Record]) -> float:
        value = auroc_interval(*binary(run[2])[::-1])[0]
        return -math.inf if math.isnan(value) else value

    return max(first_runs(ev, stage), key=auroc, default=None)


def curves(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("curves", "Discrimination and calibration")
    records = curve_records(ev, opts.stage)
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
    records = curve_records(ev, opts.stage)
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
        for label, record in curve_records(ev, stage):
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
    if opts.prevalence is not None:  # of the setting that discriminates best
        setting, job, best = best_run(ev, opts.stage)
        label = f"{setting} (seed {job.seed})"
        scores, positive = binary(best)
        curve = net_benefit(scores, positive, np.linspace(0.01, 0.6, 60), opts.prevalence)
        section.figures.append(
            figures.decision_curve_figure(
                ReportFolder(opts.output).page_files / "decision_curve.png", curve, opts.prevalence
            )
        )
        section.data["decision_curve"] = {"setting": label} | {
            k: v.tolist() for k, v in curve.items()
        }
        body.append(
            f"<p>Decision curve of {esc(label)} (the highest AUROC) at prevalence "
            f"{opts.prevalence:g}.</p>"
        )
    section.html = "".join(body)
    section.data |= {"threshold": threshold, "source": source, "prespecified": prespecified,
                     "prevalence": opts.prevalence, "points": data}  # fmt: skip
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
        summary = summarize(jobs, opts.stage)
        rows += [[fraction, r["setting"], r["runs"], _percent(r, "auroc")] for r in summary]
        if len({j.override(k) for j in jobs for k in others}) > 1:
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
