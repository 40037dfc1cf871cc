"""The model card (Mitchell et al. 2019): what the model is, how it was trained and where,
with intended use and ethical considerations left to the author."""

from __future__ import annotations

import hashlib

from covidxr.reporting.study.evidence import StudyEvidence, read_job_record
from covidxr.reporting.study.markup import PageOptions, Section, esc, table
from covidxr.run_folder import RunFolder
from covidxr.weights.registry import REGISTRY


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
