"""Paired tests between the settings of a sweep: every setting against the best one, image by
image on the test images they share (``covidxr.reporting.paired`` has the tests themselves)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from covidxr.reporting.intervals import t_interval
from covidxr.reporting.jobs import Job, setting_of, varied_keys
from covidxr.reporting.paired import (
    PairedResult,
    Record,
    compare_records,
    holm,
    over_seeds,
    read_record,
    verdict,
)


def paired_difference(
    jobs: Sequence[Job], setting_a: str, setting_b: str, metric: str = "acc", stage: str = "test"
) -> dict[str, float]:
    """``a - b`` (%) over the seeds both settings ran: mean, 95% t-interval, number of pairs."""
    keys = varied_keys(jobs)

    def by_seed(setting: str) -> dict:
        return {
            j.seed: 100 * j.metrics[f"{stage}/{metric}"]
            for j in jobs
            if setting_of(j, keys) == setting and j.metrics and f"{stage}/{metric}" in j.metrics
        }

    a, b = by_seed(setting_a), by_seed(setting_b)
    diffs = [a[seed] - b[seed] for seed in sorted(set(a) & set(b), key=str)]
    mean, low, high = t_interval(diffs)
    return {"mean": mean, "ci_low": low, "ci_high": high, "pairs": len(diffs)}


PAIRED_METRICS = ("auroc", "acc")


def _records(jobs: Sequence[Job], stage: str) -> dict[str, dict[object, Record]]:
    """Each setting's prediction records by seed (runs that wrote ``predictions_<stage>.csv``)."""
    keys = varied_keys(jobs)
    found: dict[str, dict[object, Record]] = {}
    for job in jobs:
        path = job.predictions(stage)
        if job.metrics is not None and path.is_file():
            label = job.seed if job.fold is None else f"{job.seed}/fold{job.fold}"
            found.setdefault(setting_of(job, keys), {})[label] = read_record(path)
    return found


def _paired_row(a: str, b: str, metric: str, result: PairedResult, seeds: str) -> dict:
    return {
        "setting_a": a,
        "setting_b": b,
        "metric": metric,
        "test": result.test,
        "n_images": result.n_images,
        "difference": result.difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "p_value": result.p_value,
        "p_holm": math.nan,
        "verdict": "",
        "seeds": seeds,
    }


def paired_tests(jobs: Sequence[Job], rows: Sequence[Mapping], stage: str = "test") -> list[dict]:
    """Every setting against the best one (per metric), image by image on shared test images.

    One row per seed both ran on the same images (DeLong for AUROC, exact McNemar for
    accuracy); with two or more such seeds, a combined row (paired t over seeds). Holm adjusts
    the p-values of each family: the settings compared with the best, per metric and per seed
    (or combined). Verdicts read the adjusted p.
    """
    records = _records(jobs, stage)
    out: list[dict] = []
    for metric in PAIRED_METRICS:
        ranked = [
            r
            for r in rows
            if str(r["setting"]) in records and not math.isnan(float(r[f"{metric}_mean"]))
        ]
        if len(ranked) < 2:
            continue
        best = str(max(ranked, key=lambda r: float(r[f"{metric}_mean"]))["setting"])
        families: dict[str, list[dict]] = {}
        for row in ranked:
            other = str(row["setting"])
            if other == best:
                continue
            shared = sorted((seed for seed in records[best] if seed in records[other]), key=str)
            shared = [s for s in shared if records[best][s].paths == records[other][s].paths]
            results = [
                (s, compare_records(records[best][s], records[other][s], metric)) for s in shared
            ]
            for seed, result in results:
                families.setdefault(f"seed {seed}", []).append(
                    _paired_row(best, other, metric, result, str(seed))
                )
            if len(results) > 1:
                combined = over_seeds([r.difference for _, r in results])
                combined = PairedResult(
                    combined.test,
                    results[0][1].n_images,
                    combined.difference,
                    combined.ci_low,
                    combined.ci_high,
                    combined.p_value,
                )
                seeds = " ".join(str(s) for s, _ in results)
                families.setdefault("combined", []).append(
                    _paired_row(best, other, metric, combined, seeds)
                )
        for family in families.values():
            for row, adjusted in zip(family, holm([r["p_value"] for r in family]), strict=True):
                row["p_holm"] = adjusted
                row["verdict"] = verdict(row["difference"], adjusted)
            out.extend(family)
    return out
