"""Every option of every config group composes, and what it describes can be built."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import pytest
import yaml
from conftest import compose_config
from hydra.utils import instantiate
from lightning import Trainer
from omegaconf import DictConfig, ListConfig, OmegaConf

from covidxr.paths import CONF_DIR
from covidxr.utils.runner import instantiate_callbacks, instantiate_loggers


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_groups_have_the_documented_options() -> None:
    assert options("trainer") == ["cpu", "ddp", "ddp_sim", "default", "gpu"]
    assert options("optimizer") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["cosine", "none", "plateau"]
    assert options("augment") == ["default", "none", "strong"]
    assert options("finetune") == ["full", "gradual", "linear_probe", "paper"]
    assert set(options("experiment")) >= {"demo", "paper", "smoke"}
    assert set(options("debug")) >= {"fdr", "overfit", "limit", "profiler"}
    assert set(options("logger")) >= {"csv", "tensorboard"}


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_configs_instantiate(name: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("train", [f"trainer={name}"], tmp_path, data_dir)
    # GPU configs are built on the CPU here: every other argument is still checked.
    overrides = {"accelerator": "cpu", "precision": "32-true"} if "gpu" in str(cfg.trainer) else {}
    trainer = instantiate(cfg.trainer, **overrides)
    assert isinstance(trainer, Trainer)
    if name == "ddp_sim":
        assert trainer.num_devices == 2


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_callback_and_logger_configs_instantiate(
    group: str, tmp_path: Path, data_dir: Path
) -> None:
    for name in options(group):
        cfg = compose_config("train", [f"{group}={name}"], tmp_path, data_dir)
        build = instantiate_callbacks if group == "callbacks" else instantiate_loggers
        always = {"step_seed", "preemption", "phase_times"} if group == "callbacks" else set()
        entries = {k: v for k, v in (cfg[group] or {}).items() if k not in always}
        objects = build(cfg[group])
        assert (len(entries) > 0) == (name != "none"), name
        assert len(objects) == len([v for v in entries.values() if v]) + len(always)


@pytest.mark.parametrize(
    ("group", "name"),
    [
        *[(g, n) for g in ("optimizer", "scheduler", "augment", "finetune") for n in options(g)],
        ("backbone", "random"),
        ("backbone", "file"),  # the ten published weights: tests/test_weights.py
    ],
)
def test_model_side_options_build_a_model_that_configures_optimizers(
    group: str, name: str, tmp_path: Path, data_dir: Path
) -> None:
    overrides = [f"{group}={name}"]
    if (group, name) == ("backbone", "file"):
        import torch
        from torchvision.models import resnet50

        weights = tmp_path / "resnet50.pth"
        torch.save(resnet50().state_dict(), weights)
        overrides.append(f"backbone.path={weights}")
    cfg = compose_config("train", overrides, tmp_path, data_dir)
    model = instantiate(cfg.model, _convert_="object")
    model.trainer = Trainer(max_epochs=3, logger=False, enable_checkpointing=False)
    finetune = (cfg.get("callbacks") or {}).get("finetune")
    assert (finetune is not None) == (group == "finetune" and name != "full")
    if finetune is not None:  # the scheme comes from its config group, as a callback
        instantiate(finetune).setup(model.trainer, model, "fit")
    configured = model.configure_optimizers()
    assert configured["optimizer"].param_groups
    assert ("lr_scheduler" in configured) == (group == "scheduler" and name != "none")
    if group == "augment":
        augmentations = instantiate(cfg.data).train_augmentations
        assert len(augmentations) == len(cfg.augment.train)
        assert all(isinstance(t, A.BasicTransform | A.BaseCompose) for t in augmentations)


@pytest.mark.parametrize("name", options("data"))
def test_data_configs_instantiate(name: str, tmp_path: Path, data_dir: Path) -> None:
    manifest = [f"data.manifest={tmp_path / 'labels.csv'}"] if name == "manifest" else []
    cfg = compose_config("train", [f"data={name}", *manifest], tmp_path, data_dir)
    datamodule = instantiate(cfg.data)
    assert datamodule.hparams.image_size == 224
    model = instantiate(cfg.model, _convert_="object")
    assert model.preprocessing.image_size == 224  # the model records its own preprocessing
    assert model.preprocessing.mean == tuple(cfg.backbone.mean)


def settings(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the values an experiment file sets."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= settings(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_compose(name: str, tmp_path: Path, data_dir: Path) -> None:
    """The composed config holds every value the experiment file sets (its task name too)."""
    cfg = compose_config("train", [f"experiment={name}"], tmp_path, data_dir)
    spec = yaml.safe_load((CONF_DIR / "experiment" / f"{name}.yaml").read_text())
    spec.pop("defaults", None)
    spec.pop("hydra", None)
    assert cfg.task_name == spec.get("task_name", "train")
    for key, value in settings(spec).items():
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation: resolved against the rest of the config
        composed = OmegaConf.select(cfg, key)
        if isinstance(composed, DictConfig | ListConfig):
            composed = OmegaConf.to_container(composed, resolve=True)
        assert composed == value, key


@pytest.mark.parametrize("name", options("debug"))
def test_debug_modes_compose(name: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("train", [f"debug={name}", "finetune=paper"], tmp_path, data_dir)
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.data.num_workers == 0
    assert not cfg.get("logger")
    # no checkpoints, but the recipe's scheme and the per-epoch seeding stay
    assert sorted(cfg.callbacks) == ["finetune", "phase_times", "preemption", "step_seed"]


def test_wandb_logger_brings_its_report_callback(tmp_path: Path, data_dir: Path) -> None:
    for name in ("wandb", "many"):
        cfg = compose_config("train", [f"logger={name}"], tmp_path, data_dir)
        assert "wandb" in cfg.logger and "wandb_report" in cfg.callbacks
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "logger=wandb"], tmp_path, data_dir)
    assert "wandb_report" in cfg.callbacks


def test_eval_config_composes(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("eval", ["ckpt_path=x.ckpt"], tmp_path, data_dir)
    assert cfg.ckpt_path == "x.ckpt"
    assert not cfg.logger


def test_a_config_choice_that_does_not_exist_is_one_line_before_hydra() -> None:
    from covidxr.cli import unknown_group_choice

    assert unknown_group_choice(["backbone=resnet18"]).startswith(
        "backbone=resnet18 is not an option of backbone: choose one of chestxray14"
    )
    assert "optimizer=adamx" in unknown_group_choice(["-m", "optimizer=adam,adamx", "seed=1"])
    fine = ["experiment=smoke", "data=manifest", "+debug=fdr", "model.head=paper", "seed=3"]
    assert unknown_group_choice([*fine, "backbone=imagenet", "logger=many,csv"]) is None


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_bf16_training_on_a_cpu_without_onednn_bf16_is_one_line(
    fast_bf16: bool, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AVX2-only CPU runs bf16 convolutions in torch's reference kernel (12x slower than
    fp32): refused before any data is read; where oneDNN has bf16 (AVX-512, AMX) it runs."""
    from covidxr.models import options
    from covidxr.utils.errors import ConfigError

    monkeypatch.setattr(options, "onednn_bf16", lambda: fast_bf16)
    cfg = compose_config(
        "train", ["trainer=cpu", "trainer.precision=bf16-mixed"], tmp_path, data_dir
    )
    if fast_bf16:
        options.check_precision(cfg)
    else:
        with pytest.raises(ConfigError, match=r"trainer\.precision=bf16-mixed on this CPU"):
            options.check_precision(cfg)
    options.check_precision(compose_config("train", ["trainer=cpu"], tmp_path, data_dir))


def test_logger_none_leaves_out_the_callbacks_that_only_log(tmp_path: Path, data_dir: Path) -> None:
    """Lightning refuses LearningRateMonitor without a logger: logger=none with the default
    callbacks builds a trainer (without it), and with a logger it stays."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from covidxr.utils.runner import build_trainer

    for logger, kept in (("none", False), ("csv", True)):
        cfg = compose_config("train", [f"logger={logger}", "trainer=cpu"], tmp_path, data_dir)
        callbacks = build_trainer(cfg).callbacks
        assert any(isinstance(c, LearningRateMonitor) for c in callbacks) == kept, logger
