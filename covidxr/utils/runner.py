"""What every Hydra entry point shares: building callbacks and loggers, job bookkeeping, DDP."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.utils import instantiate
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from covidxr.run_folder import RunFolder
from covidxr.utils import locks
from covidxr.utils.compat import route_ddp_children
from covidxr.utils.env import available_cpus, machine_record
from covidxr.utils.errors import (
    FolderTakenError,
    exit_with_user_error,
    find_user_error,
    user_message,
)
from covidxr.utils.io import read_json, write_json
from covidxr.utils.signals import Stopped, stop_on_signals
from covidxr.utils.timing import STOPWATCH
from covidxr.utils.validate import check_option, one_of

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a dict group (callbacks, loggers).

    Entries set to null are skipped, so ``callbacks.early_stopping=null`` turns one off.
    """
    if not group:
        return []
    if not isinstance(group, DictConfig):
        raise TypeError(f"The {kind} config must be a dict of named entries, got {group!r}")
    objects = []
    for name, entry in group.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s %s <%s>", kind, name, entry._target_)
            objects.append(instantiate(entry))
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return instantiate_group(cfg, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return instantiate_group(cfg, "logger")


#: Callbacks that only write to loggers: without one (``logger=none``) they are left out, as
#: Lightning refuses them there.
LOGGER_ONLY_CALLBACKS = (LearningRateMonitor,)


def build_trainer(cfg: DictConfig) -> Trainer:
    """The ``trainer`` config with the ``callbacks`` and ``logger`` groups' objects.

    Checkpoints are written only where a checkpoint callback asks for them: without one
    (``callbacks=none``) Lightning would add its own and leave a 280 MB file in the logger's folder.
    """
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if not loggers:
        unheard = [c for c in callbacks if isinstance(c, LOGGER_ONLY_CALLBACKS)]
        for callback in unheard:
            name = type(callback).__name__
            log.info("logger=none: %s left out (it writes only to loggers)", name)
        callbacks = [c for c in callbacks if c not in unheard]
    checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=checkpointing,
    )


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``: one column per setting in every logger."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= flatten(value, f"{prefix}{key}/")
        return out
    return {prefix.rstrip("/"): tree}


@rank_zero_only
def log_hyperparameters(cfg: DictConfig, model: LightningModule, trainer: Trainer) -> None:
    """Send the whole resolved config, flattened, and parameter counts to every logger."""
    if not trainer.loggers:
        return
    hparams = flatten(OmegaConf.to_container(cfg, resolve=True))
    hparams["model/params/total"] = sum(p.numel() for p in model.parameters())
    hparams["model/params/trainable"] = sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def job_folder() -> Path | None:
    """The run folder this process owns: None outside Hydra and in DDP children (which join
    their parent's folder)."""
    if rank_zero_only.rank != 0 or not HydraConfig.initialized():
        return None
    return output_dir() if HydraConfig.get().output_subdir is not None else None


#: Overrides that say how to run a job, not what it computes: they may change between starts.
HOW_TO_RUN = ("resume", "ckpt_path", "overwrite", "hydra.")


def job_settings(overrides: list[str]) -> list[str]:
    """The overrides that decide what a job computes, sorted."""
    return sorted(o for o in overrides if not o.lstrip("+~").startswith(HOW_TO_RUN))


def claim_run_folder(
    folder: Path,
    overrides: list[str],
    overwrite: bool = False,
    record: Mapping = MappingProxyType({}),
) -> None:
    """Record this job's settings in its folder, or refuse a folder whose run had others.

    A job started again in its own folder (``resume=auto``, a requeue) continues; a job with
    other settings (another seed, another trial of a search) would mix two runs' files, or
    return the other run's numbers as its own.
    """
    run = RunFolder(folder)
    hold_run_folder(folder)
    conflict = None if overwrite else other_settings(folder, overrides)
    if conflict:
        raise FolderTakenError(conflict)
    # the same settings, or a refused start's; ``record``: what the caller resolved (paths)
    write_json(
        run.job, {"settings": job_settings(overrides), "machine": machine_record(), **record}
    )
    run.failed.unlink(missing_ok=True)  # an earlier attempt's error; this one starts afresh


#: ``resume``: never, or ``auto`` (a job started again in its run folder continues from last.ckpt)
RESUME_CHOICES = ("never", "auto")


def check_resume(cfg: DictConfig) -> None:
    check_option(cfg, "resume", one_of(RESUME_CHOICES), f"choose one of {list(RESUME_CHOICES)}")


def claim_this_folder(cfg: DictConfig) -> None:
    """The run folder is this job's (rank 0 of a job launched by Hydra; DDP children join)."""
    folder = job_folder()
    if folder is not None:
        overrides = list(HydraConfig.get().overrides.task)
        # where the images are, resolved: reports read it on machines without this Hydra run
        data = {k: cfg.data.get(k) for k in ("root", "manifest")}
        record = {"data": {k: None if v is None else str(v) for k, v in data.items()}}
        claim_run_folder(folder, overrides, bool(cfg.get("overwrite", False)), record)


def resume_automatically(cfg: DictConfig) -> None:
    """``resume=auto``: a job started again in a run folder that has ``checkpoints/last.ckpt``
    (a preempted or requeued job) resumes from it."""
    if cfg.get("resume", "never") != "auto" or cfg.get("ckpt_path"):
        return
    last = RunFolder(output_dir()).last_checkpoint
    if last.is_file():
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
        log.info("resume=auto: resuming from %s", last)


def fit_or_stop(
    trainer: Trainer, model: LightningModule, datamodule: Any, ckpt_path: str | None
) -> None:
    """``trainer.fit``; stopped by a signal (``Preemption`` wrote ``last.ckpt``), ``Stopped``:
    exit 143, and the same command continues."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        raise Stopped(
            f"Stopped by a signal in epoch {trainer.current_epoch + 1}; "
            f"{RunFolder(output_dir()).last_checkpoint} holds this step."
        ) from None


def other_settings(folder: Path, overrides: list[str]) -> str | None:
    """Why ``folder`` holds the run of a job with other settings than ``overrides``, or None."""
    run = RunFolder(folder)
    if not (run.job.is_file() and run.results()):
        return None
    recorded = read_json(run.job).get("settings")
    settings = job_settings(overrides)
    if recorded == settings:
        return None
    return (
        f"{folder} holds a run started with other settings ({' '.join(recorded or [])}"
        f" vs {' '.join(settings)}): give another folder, or overwrite=true to replace it."
    )


def hold_run_folder(folder: Path) -> None:
    """Lock ``folder`` for this process, or refuse: two jobs in one folder would both train and
    write every log row twice. A killed job's lock goes with it."""
    try:
        locks.hold(RunFolder(folder).lock)
    except locks.LockHeld as held:
        raise FolderTakenError(
            f"{folder} is in use by another job (process {held.holder or '?'}): wait for it to "
            "end, or give another folder."
        ) from None


@contextlib.contextmanager
def forget_refused_start(folder: Path | None) -> Iterator[None]:
    """A job refused for a user error before it trained leaves only its bookkeeping (its log,
    config and ``failed.json``), so the corrected command can start in the same folder."""
    if folder is None:
        yield
        return
    run = RunFolder(folder)
    before = set(run.results())
    try:
        yield
    except Exception as exc:
        trained = run.fit_record.exists() or run.checkpoints.exists()
        if find_user_error(exc) is not None and not trained:
            for path in set(run.results()) - before:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def isolated_job() -> Iterator[None]:
    """Leave no DDP state behind a job, so the next job of a multirun can launch its own.

    Lightning's launcher exports MASTER_PORT, LOCAL_RANK, WORLD_SIZE, ... into this process and
    keeps the process group open; the next job would then believe its ranks already exist.
    """
    environ = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)


def task_wrapper(task: Callable[[DictConfig], dict[str, float]]):
    """Run one job; on failure, leave ``failed.json`` in its run directory, log, and re-raise.
    A signal stops it in any phase with exit 143 (``covidxr.utils.signals``).

    In a Hydra multirun the other jobs still run (Hydra reports the failure at the end) and
    ``covidxr-report`` shows the failed job instead of silently missing it. Loggers that keep
    a process-wide run (W&B) are closed either way, so the next job starts its own.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict[str, float]:
        STOPWATCH.reset()
        try:
            with isolated_job(), stop_on_signals(), forget_refused_start(job_folder()):
                return task(cfg)
        except Stopped as stopped:  # not a failure: no failed.json; the same command continues
            again = "resume=auto continues it" if "resume" in cfg else "run it again"
            log.warning("%s Start the same command again: %s.", stopped.message, again)
            raise
        except Exception as exc:
            taken = isinstance(find_user_error(exc), FolderTakenError)
            if rank_zero_only.rank == 0 and HydraConfig.initialized() and not taken:
                record = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                    "overrides": list(HydraConfig.get().overrides.task),
                }
                try:
                    write_json(RunFolder(output_dir()).failed, record)
                except OSError as unwritten:  # a full disk: the error itself is still reported
                    log.warning("failed.json could not be written: %s", unwritten)
            user_error = find_user_error(exc)
            if user_error is not None:  # the message says it all: no traceback
                log.error("Job failed: %s", user_message(user_error))
            else:
                log.exception("Job failed")
            raise
        finally:
            if "wandb" in sys.modules:
                import wandb

                if wandb.run is not None:
                    wandb.finish()

    return wrapped


def _job_subprocess_cmd(module: str, local_rank: int) -> tuple[list[str], str]:
    """How Lightning's DDP launcher starts ranks > 0: ``python -m <module>`` (the entry point
    that launched the job) on *this job's* saved config.

    Lightning re-runs ``sys.argv``, which inside a multirun (``-m a=1,2``) starts a whole new sweep
    in every child and points it at the wrong folder. Each job saves its composed config in
    ``<run>/.hydra/config.yaml``; children load exactly that, in the same run directory.
    """
    from hydra.utils import get_original_cwd

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    command = [
        sys.executable,
        "-m",
        module,
        f"--config-path={run_dir / hydra_cfg.output_subdir}",
        "--config-name=config",
        f"hydra.run.dir={run_dir}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def route_ddp_children_to_this_job(module: str) -> None:
    """Make DDP children of this job run ``module`` (the Hydra entry point's import name) on its
    saved config (no-op when none is saved)."""
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is None:
        return
    route_ddp_children(functools.partial(_job_subprocess_cmd, module))


def unusable_folder(folder: Path) -> str | None:
    """Why a run could not write into ``folder`` (a file there, a parent it may not write), or
    None; checked before Hydra creates anything."""
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder: give a folder for the run."
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, so no folder can be made below it: give another folder."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} may not be written by this user: give a folder you can write."
    return None


class RunFolderGuard(HydraCallback):
    """Refuse to start a run in a folder an earlier run wrote (``hydra.run.dir=<it>``), before
    Hydra writes anything there: its checkpoints, split and metrics would be replaced.

    ``resume=auto`` (continue that run) and ``overwrite=true`` (replace it) are the two ways to
    ask for it. DDP children of a run (``hydra.output_subdir=null``) join their parent's folder.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.run.dir)
        unusable = unusable_folder(folder)
        if unusable:
            exit_with_user_error(f"hydra.run.dir={folder}: {unusable}")
        if config.hydra.output_subdir is None:
            return
        earlier = [p.name for p in RunFolder(folder).results()]
        if earlier and not config.get("overwrite"):
            if config.get("resume") != "auto":
                exit_with_user_error(
                    f"hydra.run.dir={folder} holds an earlier run ({', '.join(earlier[:4])}): "
                    "give another folder, resume=auto to continue that run, or overwrite=true to "
                    "replace it."
                )
            conflict = other_settings(folder, list(config.hydra.overrides.task))
            if conflict:
                exit_with_user_error(conflict)
        try:  # before Hydra writes its config there
            hold_run_folder(folder)
        except FolderTakenError as taken:
            exit_with_user_error(f"hydra.run.dir={taken}")

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The next job of a multirun in this process may be started in the same folder."""
        locks.release(RunFolder(Path(config.hydra.runtime.output_dir)).lock)


def unmet_launch_request(config: DictConfig) -> str | None:
    """Why a multirun's jobs could never start on this machine's local Ray cluster, or None.

    Ray keeps an infeasible task waiting forever, printing only its autoscaler's line; a job
    asking more CPUs or GPUs than a local cluster has is such a task.
    """
    launcher = OmegaConf.select(config, "hydra.launcher") or {}
    ray = launcher.get("ray") if "ray" in str(launcher.get("_target_", "")).lower() else None
    if not ray or OmegaConf.select(ray, "init.address"):
        return None  # a cluster elsewhere: its size is its own
    remote = ray.get("remote") or {}
    have = {"num_cpus": available_cpus(), "num_gpus": torch.cuda.device_count()}
    for key, available in have.items():
        asked = remote.get(key) or 0
        if asked > available:
            return (
                f"hydra.launcher.ray.remote.{key}={asked}: the local Ray cluster on this machine "
                f"has {available}, so no job would ever start. Ask for at most {available}, or "
                "join a larger cluster with hydra.launcher.ray.init.address=auto."
            )
    return None


#: Ray's own failures, not a job's: the node, its raylet or a worker process went away.
RAY_NODE_FAILURES = (
    "LocalRayletDiedError",
    "NodeDiedError",
    "WorkerCrashedError",
    "RaySystemError",
    "OutOfMemoryError",
)


@contextlib.contextmanager
def exit_on_ray_node_failure(sweep_dir: str) -> Iterator[None]:
    """End a sweep whose Ray node died with one line naming the cause, Ray's log and the fix
    (exit 1): a raylet killed by the kernel's out-of-memory killer, or one that missed its
    heartbeats on an overloaded machine. The jobs that finished are on disk."""
    import ray.exceptions

    try:
        yield
    except ray.exceptions.RayError as error:
        if type(error).__name__ not in RAY_NODE_FAILURES:
            raise
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0].rstrip(".")
        logs = ray_logs()
        ray.shutdown()  # Ray's own dump of the raylet's log comes before this line, not after
        where = f" Why is in {logs / 'raylet.out'}." if logs else ""
        print(
            f"error: Ray lost a job of the sweep in {sweep_dir}: {cause}.{where} A raylet dies "
            "when it is killed (the out-of-memory killer among others) or misses its heartbeats "
            "on an overloaded machine. The finished jobs are kept: run the same command again "
            "to run the rest (launcher=ray resumes them), with fewer data.num_workers or "
            "launcher=local where memory or CPUs are short.",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def ray_logs() -> Path | None:
    """The log folder of this machine's latest Ray session, or None (Ray moves its helpers)."""
    try:
        from ray._common.utils import get_default_ray_temp_dir
    except ImportError:
        return None
    logs = Path(get_default_ray_temp_dir()) / "session_latest" / "logs"
    return logs.resolve() if logs.is_dir() else None


class LaunchResourceCheck(HydraCallback):
    """Stop a multirun whose jobs this machine could never run, with one line (exit 2)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        problem = unmet_launch_request(config)
        if problem is not None:
            exit_with_user_error(problem)
