"""The most confident false positives and false negatives of the best setting, as thumbnails
with their Grad-CAM overlays and the share of CAM energy inside the lungs (or the centre)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covidxr.reporting.jobs import Job
from covidxr.reporting.paired import Record
from covidxr.reporting.study.evidence import StudyEvidence, job_data_paths
from covidxr.reporting.study.markup import PageOptions, Section, binary, esc, number, table
from covidxr.reporting.study.performance import best_run
from covidxr.run_folder import ReportFolder, RunFolder


def most_confident_errors(scores: np.ndarray, positive: np.ndarray, k: int) -> dict[str, list]:
    """Indices of the ``k`` false positives with the highest p(positive) and the ``k`` false
    negatives with the lowest, at the 0.5 threshold."""
    called = scores >= 0.5
    fp = np.flatnonzero(called & ~positive)
    fn = np.flatnonzero(~called & positive)
    return {"false positive": fp[np.argsort(-scores[fp])][:k].tolist(),
            "false negative": fn[np.argsort(scores[fn])][:k].tolist()}  # fmt: skip


def failure_gallery(ev: StudyEvidence, opts: PageOptions) -> Section:
    section = Section("failures", "Failures")
    best = best_run(ev, opts.stage)
    if best is None:
        section.missing = f"No predictions_{opts.stage}.csv in the runs: no failure analysis."
        return section
    setting, job, record = best
    scores, positive = binary(record)
    errors = most_confident_errors(scores, positive, opts.failures)
    chosen = [(kind, i) for kind, idx in errors.items() for i in idx]
    rows = [[kind, f"#{i}", number(float(scores[i]))] for kind, i in chosen]
    body = [f"<p>{esc(setting)} (seed {job.seed}), {opts.stage} split: the most confident "
            "errors at threshold 0.5 (images by their row in "
            f"predictions_{opts.stage}.csv, never by file name).</p>",
            table(["error", "image", "p(positive)"], rows)]  # fmt: skip
    section.data = {
        "setting": setting,
        "seed": job.seed,
        "errors": [{"kind": k, "row": i, "p": float(scores[i])} for k, i in chosen],
    }
    if not chosen:
        body.append("<p>No errors at threshold 0.5.</p>")
    else:
        gallery = cam_gallery(
            job, record, chosen, ReportFolder(opts.output).page_files / "failures.png"
        )
        if isinstance(gallery, str):
            body.append(f"<p>{esc(gallery)}</p>")
        else:
            path, region, shares = gallery
            section.figures.append(path)
            section.data |= {"cam_region": region, "cam_share": [float(s) for s in shares]}
            body.append(
                f"<p>Share of Grad-CAM energy inside the {region}: mean "
                f"{np.nanmean(shares):.2f} over these {len(shares)} images.</p>"
            )
    section.html = "".join(body)
    return section


def cam_gallery(
    job: Job, record: Record, chosen: list[tuple[str, int]], path: Path
) -> tuple[Path, str, np.ndarray] | str:
    """Overlays of the chosen images, or why there are none (no checkpoint, no images)."""
    import torch

    from covidxr.data.formats.decode import read_gray
    from covidxr.data.loading.transforms import build_transform
    from covidxr.inference.gradcam import cam_grid, cam_regions, energy_share, grad_cam
    from covidxr.inference.predictors import ExportedClassifier
    from covidxr.models.module import XRayClassifier

    checkpoint = RunFolder(job.path).best_checkpoint
    if not checkpoint.is_file():
        return f"No Grad-CAM: {checkpoint} is not there (thumbnails need the run's checkpoint)."
    root = job_data_paths(job)[0]
    if root is None:
        return "No Grad-CAM: the run's config names no data root this machine can resolve."
    relative = [record.paths[i] for _, i in chosen]
    if not all((root / p).is_file() for p in relative):
        return f"No Grad-CAM: the images are not under {root} on this machine."
    model = XRayClassifier.from_checkpoint(checkpoint)
    prep = model.preprocessing
    transform = build_transform(prep.image_size)
    images = torch.stack([transform(image=read_gray(root / p))["image"] for p in relative])
    predicted = record.probs[[i for _, i in chosen]].argmax(axis=1)
    maps = grad_cam(ExportedClassifier(model, prep).eval().cpu(), images,
                    torch.as_tensor(predicted))  # fmt: skip
    names = prep.class_names
    titles = [f"{kind} #{i}\ntrue {names[record.targets[i]]}, p={record.scores[i]:.2f}"
              for kind, i in chosen]  # fmt: skip
    greys = [images[k, 0].numpy() for k in range(len(chosen))]
    grid = cam_grid(path, greys, maps, titles, [False] * len(chosen))
    region, masks = cam_regions(root, relative, prep.image_size)
    return grid, region, energy_share(maps, masks)
