"""``covidxr-train``: compose data, model, callbacks, loggers and Trainer; fit; test the best model.

covidxr-train                                   # defaults: synthetic phantoms, random init
covidxr-train experiment=paper                  # the reference study's recipe, real data
covidxr-train -m optimizer.lr=1e-3,1e-4         # a sweep (Hydra multirun)
covidxr-train ckpt_path=<run>/checkpoints/last.ckpt   # resume, same split
"""

from __future__ import annotations

import logging

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from covidxr.cli import hydra_app, register_configs
from covidxr.data.formats.classes import normalize_class_name
from covidxr.data.loading.options import check_loader
from covidxr.data.splitting.spec import SplitSpec
from covidxr.models.options import check_training
from covidxr.models.preprocessing import check_positive_class
from covidxr.reporting.run import out_of_fold, test_and_report, to_floats
from covidxr.run_folder import RunFolder
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import check_checkpoint, read_json, write_json
from covidxr.utils.runner import (
    build_trainer,
    check_resume,
    claim_this_folder,
    fit_or_stop,
    log_hyperparameters,
    output_dir,
    resume_automatically,
    route_ddp_children_to_this_job,
    task_wrapper,
)
from covidxr.utils.timing import STOPWATCH
from covidxr.utils.validate import check_required

log = logging.getLogger(__name__)


def check_train(cfg: DictConfig) -> None:
    """Every option ``covidxr-train`` can check before it reads data or builds a model."""
    check_required(cfg)
    if not cfg.get("train", True) and not cfg.get("ckpt_path"):
        raise ConfigError(
            "train=false needs ckpt_path=<run>/checkpoints/best.ckpt: the checkpoint to test."
        )
    check_loader(cfg)
    check_training(cfg)
    check_resume(cfg)


def finished_run(cfg: DictConfig) -> dict[str, float] | None:
    """``resume=auto`` in a run folder whose job finished (a requeued job that already ran to
    the end): its recorded metrics, so nothing is trained, tested or rewritten again."""
    metrics = RunFolder(output_dir()).metrics
    if cfg.get("resume", "never") != "auto" or not metrics.is_file():
        return None
    log.info("resume=auto: %s finished already; returning its recorded metrics", metrics.parent)
    return read_json(metrics)


def reuse_split_when_resuming(cfg: DictConfig) -> None:
    """Resuming from ``<run>/checkpoints/*.ckpt`` keeps that run's split unless one is given."""
    if not cfg.get("ckpt_path"):
        return
    ckpt = check_checkpoint(cfg.ckpt_path)  # a damaged file is one line, before any work
    if cfg.data.get("split_file"):
        return
    split = RunFolder.of_checkpoint(ckpt).split
    if split.is_file():
        with open_dict(cfg):
            cfg.data.split_file = str(split)
        log.info("Resuming with the split of the original run: %s", split)


def fit(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
) -> tuple[dict[str, float], str]:
    """Fit; record what it ended with (``fit.json``), so a job stopped later tests without
    fitting again. ``(metrics, best checkpoint or "")``."""
    with STOPWATCH.phase("fit"):
        fit_or_stop(trainer, model, datamodule, ckpt_path)
    metrics = to_floats(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if trainer.is_global_zero:
        write_json(RunFolder(output_dir()).fit_record, {"metrics": metrics, "best": best})
    return metrics, best


def finished_fit(cfg: DictConfig) -> tuple[dict[str, float], str] | None:
    """``resume=auto`` in a run folder whose fit ended (the job was stopped while testing or
    writing its report): fit's recorded metrics and best checkpoint."""
    record = RunFolder(output_dir()).fit_record
    if cfg.get("resume", "never") != "auto" or not record.is_file():
        return None
    found = read_json(record)
    log.info("resume=auto: the fit of %s ended already; testing its best model", record.parent)
    return dict(found.get("metrics") or {}), str(found.get("best") or "")


@task_wrapper
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one configuration; returns every logged metric as floats.

    ``train=false`` tests the checkpoint ``ckpt_path`` (required then) without fitting.
    """
    check_train(cfg)
    # Every split option is checked before any file is read.
    spec = SplitSpec.from_options(cfg.data)
    spec.require_splits(test=cfg.get("test", True))
    check_positive_class(spec.classes, normalize_class_name(str(cfg.model.positive_class)))
    claim_this_folder(cfg)
    finished = finished_run(cfg)
    if finished is not None:
        return finished
    resume_automatically(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    reuse_split_when_resuming(cfg)
    route_ddp_children_to_this_job(__spec__.name)  # this module, also under python -m
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    # Index, split and (data.verify) decode every image before a model is built or weights are
    # downloaded: bad data is named first. The Trainer's own setup() call reuses this index.
    with STOPWATCH.phase("index"):
        datamodule.setup("fit" if cfg.get("train", True) else "test")
    with STOPWATCH.phase("model"):  # the weights read (downloaded, converted)
        model: L.LightningModule = instantiate(cfg.model, _convert_="object")
    trainer = build_trainer(cfg)
    log_hyperparameters(cfg, model, trainer)
    if not cfg.get("train", True):
        return test_and_report(trainer, model, datamodule, cfg.ckpt_path, output_dir())
    fitted = finished_fit(cfg)
    if fitted is None:
        fitted = fit(trainer, model, datamodule, cfg.get("ckpt_path"))
    fit_metrics, best = fitted
    if not cfg.get("test", True):
        return test_and_report(
            trainer, model, datamodule, None, output_dir(), fit_metrics, test=False
        )
    if not best:
        log.warning("No best checkpoint was saved: testing the current weights.")
    if datamodule.spec.folds is not None:  # cross-validation: score the held-out fold too
        fit_metrics |= out_of_fold(trainer, model, datamodule, best or None, output_dir())
    return test_and_report(trainer, model, datamodule, best or None, output_dir(), fit_metrics)


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value returned to Hydra sweepers; a metric the run did not log is reported missing."""
    name = cfg.get("optimized_metric")
    if name and name not in metrics:
        log.warning(
            "optimized_metric=%s was not logged by this run (no validation?); returning nothing. "
            "Logged: %s",
            name,
            ", ".join(sorted(metrics)),
        )
    return metrics.get(name) if name else None


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, train(cfg))


register_configs()
if __name__ == "__main__":
    main()
