"""OmegaConf resolvers and config helpers shared by entry points and library code.

``covidxr.cli.register_configs()`` registers ``RESOLVERS`` (and the backbone configs, from the
weights registry) before any config is composed, in an app, a test or a notebook.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import albumentations as A
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from covidxr.paths import CONF_DIR
from covidxr.run_folder import RunFolder
from covidxr.utils.env import available_cpus, data_dir, wandb_offline
from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_write


def to_builtin(value: Any) -> Any:
    """OmegaConf containers, tuples and paths to plain Python, recursively.

    Hyperparameters stored in checkpoints must be builtins so that ``torch.load(weights_only=True)``
    can read them back.
    """
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): to_builtin(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtin(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def load_augmentations(name: str = "default") -> list[A.BasicTransform]:
    """Instantiate the training transforms of ``conf/augment/<name>.yaml``."""
    path = CONF_DIR / "augment" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"No augmentation config {path}; choose one of {choices}.")
    return list(instantiate(OmegaConf.load(path).train))


def run_group(default: str) -> str:
    """The multirun's folder name inside a sweep (so its jobs group together), else ``default``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return default


def run_id(name: str) -> str:
    """An id kept in the run folder (``<name>_id.txt``): a resumed or requeued job reuses it,
    so its W&B run continues instead of starting a new one."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return secrets.token_hex(4)
    path = RunFolder(Path(HydraConfig.get().runtime.output_dir)).service_id(name)
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_hex(4)
    with atomic_write(path) as fh:
        fh.write(value + "\n")
    return value


def optuna_storage(folder: str) -> str:
    """``sqlite:///<folder>/optuna.db``, the folder created: Optuna opens it before any job runs."""
    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'optuna.db'}"


def optuna_seed(seed: int, storage: str, study_name: str) -> int:
    """The sampler's seed: ``seed`` plus the trials the study already holds. A second command
    continuing a study then draws new parameters instead of replaying the first command's, and
    a fresh study still repeats exactly."""
    import optuna

    try:
        trials = len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:  # no such study yet
        trials = 0
    return int(seed) + trials


RESOLVERS = {
    "uid": lambda: secrets.token_hex(3),  # a short random id, cached: run folders never collide
    "wandb_offline": wandb_offline,
    "run_group": run_group,
    "append": lambda items, item: [*items, item],
    "data_dir": data_dir,  # ${data_dir:default}: COVIDXR_DATA_DIR, else the default
    "run_id": run_id,  # ${run_id:wandb}: the run folder's own id for that service
    "optuna_storage": optuna_storage,  # ${optuna_storage:<folder>}: an SQLite study there
    "optuna_seed": optuna_seed,  # ${optuna_seed:<seed>,<storage>,<study>}: seed + trials so far
    # ${gpus:${trainer.accelerator},${trainer.devices}}: GPUs a launcher asks for one job
    "gpus": lambda accelerator, devices: devices if accelerator in ("gpu", "cuda") else 0,
    "flag": lambda value, text: text if value else "",  # ${flag:${.x},-x}: "-x" when x is true
    # ${job_cpus:${data.num_workers}}: a job's loader workers + 1, at most what this machine has
    "job_cpus": lambda workers: min(int(workers) + 1, available_cpus()),
}


def register_resolvers(extra: Mapping[str, Any] | None = None) -> None:
    """Register ``RESOLVERS`` (and ``extra``) with OmegaConf once: the entry points before they
    compose, a report before it resolves a run's saved config."""
    from omegaconf import OmegaConf

    for name, function in {**RESOLVERS, **(extra or {})}.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function, use_cache=name == "uid")
