"""The sections about the images: their flow (found, unreadable, grouped, per split) and
their characteristics per partition (formats, bit depths, sizes, manifest columns)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from covidxr.data.splitting.privacy import PATIENT_WORDS
from covidxr.data.splitting.splits import SPLITS, UNLABELED
from covidxr.reporting.study import figures
from covidxr.reporting.study.evidence import StudyEvidence
from covidxr.reporting.study.markup import PageOptions, Section, esc, table
from covidxr.reporting.study.subgroups import binned, group_columns
from covidxr.run_folder import ReportFolder

#: A split file's parts in the order a reader follows them.
SPLIT_ORDER = (SPLITS[0], UNLABELED, *SPLITS[1:])
#: Columns never shown as values, only counted: patient keys, names, dates.
IDENTIFYING_WORDS = (*PATIENT_WORDS, "name", "date", "birth", "dob", "address", "phone")


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
            [[s, *[size_text(np.percentile(np.asarray(v), q, axis=0)) for q in (0, 50, 100)]]
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


def size_text(wh: np.ndarray) -> str:
    return f"{int(wh[0])} x {int(wh[1])}"


def read_headers(ev: StudyEvidence) -> dict[str, tuple[int, int, int]]:
    """Bits, width and height of every image of the split, from the file headers; empty when
    the images are not on this machine."""
    from covidxr.data.formats.decode import image_header

    root = ev.root
    if root is None or not ev.split or not (root / ev.split[0]["path"]).is_file():
        return {}
    headers = {}
    for row in ev.split:
        try:
            headers[row["path"]] = image_header(root / row["path"])
        except (OSError, ValueError):
            continue  # unreadable: the flow counts it
    return headers
