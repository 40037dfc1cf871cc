"""Write the study page: ``report.html`` (self-contained: styles and images inlined, nothing
fetched from a network), ``report.json`` (the same numbers), the checklists as CSV, and the
figures under ``report_files/``."""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2
import numpy as np

from covidxr.reporting.jobs import Job
from covidxr.reporting.study import data_sections, performance, validity
from covidxr.reporting.study.checklists import AUTHOR, CHECKLISTS, FILLED, PARTLY, checklist_rows
from covidxr.reporting.study.evidence import gather
from covidxr.reporting.study.failures import failure_gallery
from covidxr.reporting.study.markup import PageOptions, Section
from covidxr.reporting.study.model_card import model_card
from covidxr.run_folder import ReportFolder
from covidxr.utils.io import atomic_write

#: The page may load nothing: no script, no font, no image but its own inlined ones.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>covidxr study report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #bbb;padding:3px 7px;text-align:left}th{background:#eef}
.missing{color:#777;font-style:italic}.warn{color:#a00;font-weight:bold}
img{max-width:100%;border:1px solid #ddd}nav a{margin-right:.8em}
.filled{background:#e4f6e4}.partly{background:#fff6d8}.author{background:#f3f3f3}
</style></head><body>
<h1>covidxr study report</h1>
<p>{{ summary }}</p>
<nav>{% for sec in sections %}<a href="#{{ sec.key }}">{{ sec.title }}</a>{% endfor %}
<a href="#checklists">Checklists</a></nav>
{% for sec in sections %}<section id="{{ sec.key }}"><h2>{{ sec.title }}</h2>
{% if sec.missing %}<p class="missing">{{ sec.missing }}</p>{% endif %}
{{ sec.html }}
{% for image in images[sec.key] %}<p><img alt="{{ sec.title }}" src="{{ image }}"></p>{% endfor %}
</section>{% endfor %}
<section id="checklists"><h2>Checklists</h2>
{% for name, rows, counts in checklists %}<h3>{{ name }}</h3>
<p>{{ counts }}</p><table><thead><tr><th>item</th><th>title</th><th>status</th><th>evidence</th>
</tr></thead><tbody>{% for r in rows %}<tr class="{{ r.css }}"><td>{{ r.item }}</td>
<td>{{ r.title }}</td><td>{{ r.status }}</td><td>{% for key in r.links %}<a href="#{{ key }}">
{{ key }}</a> {% endfor %}</td></tr>{% endfor %}</tbody></table>{% endfor %}
</section></body></html>
""",
    autoescape=jinja2.select_autoescape(default=True),
)


def write_study_page(
    jobs: list[Job], opts: PageOptions, rows: Sequence[Mapping], tests: Sequence[Mapping]
) -> dict[str, Path]:
    """Every section for ``jobs`` (``rows``/``tests``: the comparison already computed),
    written as ``report.html``, ``report.json`` and ``checklist_*.csv``."""
    evidence = gather(jobs)
    report = ReportFolder(opts.output)
    report.page_files.mkdir(parents=True, exist_ok=True)
    built = [
        data_sections.flow(evidence, opts),
        data_sections.characteristics(evidence, opts),
        performance.comparison(evidence, opts, rows, tests),
        performance.curves(evidence, opts),
        performance.operating(evidence, opts),
        validity.subgroups(evidence, opts),
        failure_gallery(evidence, opts),
        validity.external(evidence, opts, rows),
        performance.label_efficiency(evidence, opts),
        model_card(evidence, opts),
    ]
    present = {sec.key: sec.missing is None for sec in built}
    written: dict[str, Path] = {}
    checklists, data_lists = [], {}
    for key, (name, items) in CHECKLISTS.items():
        check = checklist_rows(items, present)
        path = report.checklist(key)
        with atomic_write(path) as fh:
            writer = csv.DictWriter(fh, fieldnames=["item", "title", "status", "evidence"])
            writer.writeheader()
            writer.writerows(check)
        written[f"checklist_{key}"] = path
        counts = {st: sum(r["status"] == st for r in check) for st in (FILLED, PARTLY, AUTHOR)}
        data_lists[key] = {"counts": counts, "items": check}
        css = {FILLED: "filled", PARTLY: "partly", AUTHOR: "author"}
        checklists.append((name, [r | {"css": css[r["status"]],
                                       "links": r["evidence"].replace("#", "").split()}
                                  for r in check],
                           ", ".join(f"{n} {st}" for st, n in counts.items())))  # fmt: skip
    images = {sec.key: [_inline(p) for p in sec.figures] for sec in built}
    summary = (f"{len(evidence.jobs)} runs ({len(evidence.done)} finished) in "
               f"{len(evidence.settings)} settings; {opts.stage} split; written "
               f"{datetime.date.today().isoformat()}.")  # fmt: skip
    page = TEMPLATE.render(
        sections=[_markup(sec) for sec in built], images=images, checklists=checklists,
        summary=summary,
        csp=CSP,
    )  # fmt: skip
    written["html"] = report.page
    with atomic_write(written["html"]) as fh:
        fh.write(page)
    data = {"summary": summary, "notes": evidence.notes, "checklists": data_lists,
              "sections": {sec.key: {"title": sec.title, "missing": sec.missing,
                                     "data": sec.data} for sec in built}}  # fmt: skip
    written["json"] = report.page_data
    with atomic_write(written["json"]) as fh:
        json.dump(_plain(data), fh, indent=1)
    return written


def _markup(section: Section) -> dict:
    """A section for the template: its HTML is built escaped, so it is marked safe here."""
    return {"key": section.key, "title": section.title, "missing": section.missing,
            "html": jinja2.utils.markupsafe.Markup(section.html)}  # fmt: skip


def _inline(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _plain(value: object) -> object:
    """JSON-safe: NaN as null, numpy numbers as Python ones, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
