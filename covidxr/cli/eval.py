"""``covidxr-eval``: test a checkpoint on the test split its training run recorded.

    covidxr-eval ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt
    covidxr-eval ckpt_path=... data.root=/new/place/of/the/dataset split_file=other_split.csv

The model brings its preprocessing and the checkpoint its data settings (dataset, classes,
split), so the numbers equal the training run's test numbers; ``metrics.json`` lands in this
eval's run folder. ``external=FOLDER`` also scores every image of another dataset (any layout,
classes matched by name) as ``external/...`` metrics, beside the internal ones.

    covidxr-eval ensemble=[logs/train/multiruns/<sweep>] ensemble_top_k=3 tta=shifts

``ensemble`` averages the probabilities of several checkpoints tested on one split; ``tta`` the
probabilities of shifted and scaled views of each image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from covidxr.cli import hydra_app, register_configs
from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.inference.forms import CHECKPOINT, form_of
from covidxr.inference.gradcam import write_test_cam_grid
from covidxr.inference.threshold import save_threshold
from covidxr.models.module import XRayClassifier
from covidxr.models.tta import resolve_views
from covidxr.reporting.ensemble import ensemble_members, ensemble_test, shared_test_split
from covidxr.reporting.exported import evaluate_exported
from covidxr.reporting.options import check_eval
from covidxr.reporting.run import (
    compare_with_training_run,
    external_test,
    print_metrics,
    test_and_report,
)
from covidxr.reporting.wandb_plots import log_image
from covidxr.run_folder import RunFolder
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import write_json
from covidxr.utils.runner import build_trainer, output_dir, task_wrapper

log = logging.getLogger(__name__)


def evaluate_ensemble(cfg: DictConfig) -> dict[str, float]:
    members = ensemble_members(cfg.ensemble, cfg.get("ensemble_top_k"))
    split_file = cfg.split_file or shared_test_split(members)
    datamodule = RadiographyDataModule.from_checkpoint(
        members[0], cfg.data, split_file, output_dir()
    )
    datamodule.setup("test")
    return ensemble_test(members, datamodule, output_dir(), resolve_views(cfg.get("tta")))


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    check_eval(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("ensemble"):
        return evaluate_ensemble(cfg)
    ckpt_path = Path(cfg.ckpt_path)
    form = form_of(ckpt_path)
    if form is not CHECKPOINT:
        needs = [k for k in ("tta", "cam_samples", "external", "target_sensitivity") if cfg.get(k)]
        if needs:
            raise ConfigError(
                f"{needs[0]}= needs the checkpoint (.ckpt): {ckpt_path} is an exported "
                f"{form.name} file."
            )
        return evaluate_exported(
            ckpt_path, cfg.data, cfg.split_file, output_dir(), cfg.get("strict", False)
        )
    model = XRayClassifier.from_checkpoint(ckpt_path)
    model.tta = resolve_views(cfg.get("tta"))
    log.info("Testing %s in fp32, eager: the reference precision (the run's numbers)", ckpt_path)
    datamodule = RadiographyDataModule.from_checkpoint(
        ckpt_path, cfg.data, cfg.split_file, output_dir()
    )
    external = None
    if cfg.get("external"):  # indexed before the test: a wrong folder is named first
        external = RadiographyDataModule.external(
            cfg.external,
            model.class_names,
            model.preprocessing.image_size,
            class_map=cfg.get("external_map"),
            batch_size=datamodule.hparams.batch_size,
            num_workers=datamodule.hparams.num_workers,
        )
    trainer = build_trainer(cfg)
    metrics = test_and_report(trainer, model, datamodule, None, output_dir())
    if not model.tta:  # views change the numbers on purpose
        compare_with_training_run(metrics, ckpt_path, strict=cfg.get("strict", False))
    extra: dict[str, float] = {}
    if cfg.get("cam_samples"):
        grid, energy = write_test_cam_grid(
            model,
            datamodule.datasets["test"],
            model.test_predictions,
            int(cfg.cam_samples),
            RunFolder(output_dir()).cam_grid,
        )
        log_image(trainer, "test/grad_cam", grid)
        extra |= energy
    if external is not None:
        extra |= external_test(trainer, model, external, output_dir())
    if extra:  # metrics.json and the table once more, with what followed the test
        metrics |= extra
        write_json(RunFolder(output_dir()).metrics, dict(sorted(metrics.items())))
        print_metrics(metrics, output_dir())
    if cfg.get("target_sensitivity"):
        metrics["val/threshold"] = save_threshold(
            trainer,
            model,
            datamodule,
            float(cfg.target_sensitivity),
            ckpt_path,
            output_dir() / f"{ckpt_path.stem}.threshold.ckpt",
        )
    return metrics


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


register_configs()
if __name__ == "__main__":
    main()
