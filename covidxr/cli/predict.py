"""``covidxr-predict``: score new X-rays into a CSV, optionally with Grad-CAM overlays.

    covidxr-predict ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt inputs=[scans/]
    covidxr-predict ckpt_path=model.onnx inputs=["scans/**/*.png"] output=preds.csv

A row per input file: path, predicted class, probability per class, and the error for a file
that could not be read (the others go on; the exit code is 1 when any failed).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.progress import Progress

from covidxr.cli import hydra_app, register_configs
from covidxr.data.formats.decode import read_gray
from covidxr.inference.forms import load_model
from covidxr.inference.inputs import batches, expand_inputs
from covidxr.inference.options import check_predict
from covidxr.inference.predictors import Predictor, TorchPredictor
from covidxr.models.tta import View, averaged, resolve_views
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_write, check_new_output

log = logging.getLogger(__name__)


def cam_paths(files: Sequence[Path], cam_dir: Path) -> list[Path]:
    """One overlay per input, mirroring the inputs' folders below their common folder, so that
    ``a/scan.png`` and ``b/scan.png`` never write the same overlay."""
    if not files:
        return []
    resolved = [Path(f).resolve() for f in files]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    return [cam_dir / p.relative_to(common).with_suffix(".cam.png") for p in resolved]


def predict_files(
    predictor: Predictor,
    files: list[Path],
    output: str | os.PathLike,
    threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cam_dir: Path | None = None,
    tta: Sequence[View] = (),
) -> int:
    """Write one CSV row per file; returns how many files could not be read. ``tta``: the mean
    probabilities over these views of each image."""
    prep = predictor.preprocessing
    columns = ["path", "predicted", *[f"p_{name}" for name in prep.class_names], "error"]
    overlays = cam_paths(files, cam_dir) if cam_dir is not None else []
    failed = 0
    with atomic_write(output) as fh, Progress(transient=True) as progress:
        writer = csv.writer(fh)
        writer.writerow(columns)
        task = progress.add_task("Predicting", total=len(files))
        for images, indices, errors in batches(files, prep.image_size, batch_size, num_workers):
            probs = averaged(images, tta, lambda x: torch.as_tensor(predictor(x))).numpy()
            labels = prep.decide(probs, threshold)
            for row, (index, error) in enumerate(zip(indices, errors, strict=True)):
                if error:
                    failed += 1
                    writer.writerow([files[index], "", *[""] * len(prep.class_names), error])
                    continue
                name = prep.class_names[int(labels[row])]
                writer.writerow([files[index], name, *[f"{p:.6f}" for p in probs[row]], ""])
            if overlays:
                targets = [(files[i], overlays[i]) for i in indices]
                write_cams(predictor, images, labels, targets, errors)
            progress.advance(task, len(indices))
    return failed


def write_cams(
    predictor: Predictor, images, labels, targets: list[tuple[Path, Path]], errors
) -> None:
    """A Grad-CAM overlay for each readable image: ``targets`` pairs its file and overlay path."""
    from covidxr.inference.gradcam import grad_cam, save_overlay

    if not isinstance(predictor, TorchPredictor):
        raise ConfigError("cam=true needs the checkpoint (.ckpt), not an exported model.")
    ok = [i for i, error in enumerate(errors) if not error]
    if not ok:
        return
    batch = images[ok].to(predictor.device)
    maps = grad_cam(predictor.module, batch, torch.as_tensor(labels[ok]))
    for cam, i in zip(maps, ok, strict=True):
        source, overlay = targets[i]
        save_overlay(overlay, read_gray(source), cam)


def inputs_and_outputs(cfg: DictConfig) -> tuple[Path, Path | None, list[Path]]:
    """The CSV, the overlay folder and the input images, checked before anything is scored:
    nothing a user has (an earlier CSV or overlays, an input X-ray) is written over unasked,
    and the run's own outputs inside an input folder are not taken as inputs."""
    output = check_new_output(cfg.output, cfg.overwrite)
    cam_dir = output.parent / "cam" if cfg.cam else None
    if cam_dir is not None and cam_dir.is_dir() and any(cam_dir.iterdir()) and not cfg.overwrite:
        raise ConfigError(
            f"cam=true writes overlays into {cam_dir}, which holds earlier ones: give another "
            "output folder, or overwrite=true to replace them."
        )
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    files = expand_inputs(inputs, skip=[cam_dir] if cam_dir else [])
    if not files:
        raise ConfigError(f"inputs={inputs} holds no images: give image files, folders or globs.")
    if output.resolve() in {f.resolve() for f in files}:
        raise ConfigError(f"output={output} is one of the inputs: give another file name.")
    return output, cam_dir, files


@hydra_app("predict")
def main(cfg: DictConfig) -> None:
    check_predict(cfg)
    output, cam_dir, files = inputs_and_outputs(cfg)
    predictor = load_model(cfg.ckpt_path, cfg.get("precision", "auto"), cfg.device, cfg.num_workers)
    failed = predict_files(
        predictor,
        files,
        output,
        cfg.threshold,
        cfg.batch_size,
        cfg.num_workers,
        cam_dir,
        resolve_views(cfg.get("tta")),
    )
    log.info("Wrote %d predictions to %s (%d unreadable)", len(files), output, failed)
    print(f"{len(files) - failed} of {len(files)} images scored: {output}")
    if failed:
        raise SystemExit(1)


register_configs()
if __name__ == "__main__":
    main()
