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
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.progress import Progress

from covidxr import config as _config  # noqa: F401  (registers the ${uid:} resolver)
from covidxr.data.decode import read_gray
from covidxr.inference import TorchPredictor, batches, expand_inputs, load_predictor
from covidxr.paths import CONF_DIR

log = logging.getLogger(__name__)


def predict_files(
    predictor,
    files: list[Path],
    output: str | os.PathLike,
    threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cam_dir: Path | None = None,
) -> int:
    """Write one CSV row per file; returns how many files could not be read."""
    prep = predictor.preprocessing
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    columns = ["path", "predicted", *[f"p_{name}" for name in prep.class_names], "error"]
    failed = 0
    tmp = output.with_name(f".{output.name}.tmp")
    with tmp.open("w", newline="") as fh, Progress(transient=True) as progress:
        writer = csv.writer(fh)
        writer.writerow(columns)
        task = progress.add_task("Predicting", total=len(files))
        for images, indices, errors in batches(files, prep.image_size, batch_size, num_workers):
            probs = predictor(images)
            labels = prep.decide(probs, threshold)
            for row, (index, error) in enumerate(zip(indices, errors, strict=True)):
                if error:
                    failed += 1
                    writer.writerow([files[index], "", *[""] * len(prep.class_names), error])
                    continue
                name = prep.class_names[int(labels[row])]
                writer.writerow([files[index], name, *[f"{p:.6f}" for p in probs[row]], ""])
            if cam_dir is not None:
                write_cams(predictor, images, labels, [files[i] for i in indices], errors, cam_dir)
            progress.advance(task, len(indices))
    os.replace(tmp, output)  # a complete CSV or none: never half of one
    return failed


def write_cams(predictor, images, labels, files, errors, cam_dir: Path) -> None:
    import torch

    from covidxr.explain import grad_cam, save_overlay

    if not isinstance(predictor, TorchPredictor):
        raise ValueError("cam=true needs the checkpoint (.ckpt), not an exported model.")
    ok = [i for i, error in enumerate(errors) if not error]
    if not ok:
        return
    batch = images[ok].to(predictor.device)
    maps = grad_cam(predictor.module, batch, torch.as_tensor(labels[ok]))
    for cam, i in zip(maps, ok, strict=True):
        grey = read_gray(files[i])
        save_overlay(cam_dir / f"{Path(files[i]).stem}.cam.png", grey, cam)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    predictor = load_predictor(cfg.ckpt_path, cfg.device)
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    files = expand_inputs(inputs)
    output = Path(cfg.output)
    cam_dir = output.parent / "cam" if cfg.cam else None
    failed = predict_files(
        predictor, files, output, cfg.threshold, cfg.batch_size, cfg.num_workers, cam_dir
    )
    log.info("Wrote %d predictions to %s (%d unreadable)", len(files), output, failed)
    print(f"{len(files) - failed} of {len(files)} images scored: {output}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
