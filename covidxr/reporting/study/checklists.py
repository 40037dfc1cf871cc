"""CLAIM 2024 (44 items) and TRIPOD+AI (27 items) as tables: per item, whether the page holds its
evidence (``filled``, with the section that is it), holds part of it (``partly``), or it is the
author's to write (``for the author``).

Items are kept by their number and a short title; the status follows from which sections of the
page have content, so an item is never marked filled by a section that said its input is missing.
The item lists live here only: a corrected title or number is one edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FILLED, PARTLY, AUTHOR = "filled", "partly", "for the author"


@dataclass(frozen=True)
class Item:
    number: str
    title: str
    evidence: tuple[str, ...] = ()  # page sections (or files) holding the evidence
    partial: bool = False  # the page holds only part of what the item asks


def _items(*rows: tuple) -> tuple[Item, ...]:
    return tuple(Item(*row) for row in rows)


#: Checklist for Artificial Intelligence in Medical Imaging, 2024 update (Tejani et al., Radiol
#: Artif Intell 2024;6(4):e240300).
CLAIM_2024 = _items(
    ("1", "Identification as a study of AI methodology"),
    ("2", "Structured summary"),
    ("3", "Scientific and clinical background, intended use"),
    ("4", "Study objectives and hypotheses"),
    ("5", "Prospective or retrospective study"),
    ("6", "Study goal"),
    ("7", "Data sources", ("characteristics",), True),
    ("8", "Eligibility criteria", ("flow",), True),
    ("9", "Data preprocessing steps", ("model_card",)),
    ("10", "Selection of data subsets", ("flow",)),
    ("11", "Definitions of data elements", ("characteristics",), True),
    ("12", "De-identification methods"),
    ("13", "How missing data were handled", ("flow",), True),
    ("14", "Ethics approval and consent"),
    ("15", "Definition of the reference standard"),
    ("16", "Rationale for choosing the reference standard"),
    ("17", "Source of reference-standard annotations; annotators"),
    ("18", "Annotation tools"),
    ("19", "Inter- and intrarater variability"),
    ("20", "Intended sample size and how it was determined"),
    ("21", "How data were assigned to partitions; proportions", ("flow",)),
    ("22", "Level at which partitions are disjoint", ("flow",)),
    ("23", "Detailed description of the model", ("model_card",)),
    ("24", "Software libraries, frameworks and packages", ("model_card",)),
    ("25", "Initialization of model parameters", ("model_card",)),
    ("26", "Details of the training approach", ("model_card",)),
    ("27", "Method of selecting the final model", ("model_card",), True),
    ("28", "Ensembling techniques", ("comparison",), True),
    ("29", "Metrics of model performance", ("comparison", "curves")),
    ("30", "Statistical measures of significance and uncertainty", ("comparison",)),
    ("31", "Robustness or sensitivity analysis", ("comparison", "external"), True),
    ("32", "Methods for explainability and their validation", ("failures",), True),
    ("33", "Assessment of bias and fairness across subgroups", ("subgroups",)),
    ("34", "Validation or testing on external data", ("external",)),
    ("35", "Flow of participants or cases (diagram)", ("flow",)),
    ("36", "Demographic and clinical characteristics per partition", ("characteristics",)),
    ("37", "Performance metrics on all data partitions", ("comparison", "operating_point")),
    ("38", "Estimates of diagnostic accuracy and their precision", ("operating_point",)),
    ("39", "Failure analysis of incorrectly classified cases", ("failures",)),
    ("40", "Study limitations", ("external",), True),
    ("41", "Implications for practice, intended use", ("model_card",), True),
    ("42", "Registration number and registry"),
    ("43", "Where the full study protocol, data and code can be accessed", ("model_card",), True),
    ("44", "Sources of funding; role of funders"),
)

#: TRIPOD+AI (Collins et al., BMJ 2024;385:e078378): 27 items, with their sub-items.
TRIPOD_AI = _items(
    ("1", "Title"),
    ("2", "Abstract"),
    ("3a", "Background: healthcare context and rationale"),
    ("3b", "Background: target population and intended purpose", ("model_card",), True),
    ("3c", "Background: known health inequalities"),
    ("4", "Objectives"),
    ("5a", "Data: sources", ("characteristics",), True),
    ("5b", "Data: dates of collection"),
    ("6a", "Participants: study setting", ("characteristics",), True),
    ("6b", "Participants: eligibility criteria", ("flow",), True),
    ("6c", "Participants: treatments received"),
    ("7", "Data preparation", ("flow", "model_card")),
    ("8a", "Outcome: definition"),
    ("8b", "Outcome: qualifications of assessors, blinding"),
    ("8c", "Outcome: methods of assessment"),
    ("9a", "Predictors: choice", ("model_card",), True),
    ("9b", "Predictors: definitions", ("model_card",), True),
    ("9c", "Predictors: assessors"),
    ("10", "Sample size"),
    ("11", "Missing data", ("flow",), True),
    ("12a", "Analysis: how data were used (development, evaluation)", ("flow",)),
    ("12b", "Analysis: handling of predictors", ("model_card",)),
    ("12c", "Analysis: model type, building steps, tuning, internal validation", ("model_card",)),
    ("12d", "Analysis: heterogeneity across clusters", ("subgroups",)),
    ("12e", "Analysis: performance measures and plots", ("curves", "operating_point")),
    ("12f", "Analysis: model updating (recalibration)", ("curves",), True),
    ("12g", "Analysis: how predictions were calculated", ("model_card",)),
    ("13", "Class imbalance", ("characteristics",), True),
    ("14", "Fairness", ("subgroups",)),
    ("15", "Model output and decision thresholds", ("operating_point",)),
    ("16", "Differences between development and evaluation data", ("external",)),
    ("17", "Ethical approval"),
    ("18a", "Open science: funding"),
    ("18b", "Open science: conflicts of interest"),
    ("18c", "Open science: protocol"),
    ("18d", "Open science: registration"),
    ("18e", "Open science: data sharing"),
    ("18f", "Open science: code sharing", ("model_card",), True),
    ("19", "Patient and public involvement"),
    ("20a", "Participants: flow", ("flow",)),
    ("20b", "Participants: characteristics", ("characteristics",)),
    ("20c", "Participants: comparison of development and evaluation data", ("external",)),
    ("21", "Model development: participants and outcome events", ("flow",)),
    ("22", "Model specification", ("model_card",)),
    ("23a", "Model performance with confidence intervals", ("comparison", "curves")),
    ("23b", "Model performance in subgroups / heterogeneity", ("subgroups",)),
    ("24", "Model updating"),
    ("25", "Interpretation", (), False),
    ("26", "Limitations", ("external",), True),
    ("27a", "Usability: handling of poor-quality or missing input"),
    ("27b", "Usability: users' interaction and expertise"),
    ("27c", "Usability: future research and generalisability"),
)

CHECKLISTS = {"claim2024": ("CLAIM 2024", CLAIM_2024), "tripod_ai": ("TRIPOD+AI", TRIPOD_AI)}


def status(item: Item, present: Mapping[str, bool]) -> tuple[str, list[str]]:
    """The item's status and the sections that hold its evidence (``present``: section key to
    whether it has content)."""
    found = [key for key in item.evidence if present.get(key)]
    if not found:
        return AUTHOR, []
    if item.partial or len(found) < len(item.evidence):
        return PARTLY, found
    return FILLED, found


def checklist_rows(items: tuple[Item, ...], present: Mapping[str, bool]) -> list[dict[str, str]]:
    rows = []
    for item in items:
        state, found = status(item, present)
        rows.append({"item": item.number, "title": item.title, "status": state,
                     "evidence": " ".join(f"#{key}" for key in found)})  # fmt: skip
    return rows
