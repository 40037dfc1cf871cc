"""Fine-tuning schemes: what each one trains, and resuming each from last.ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config

from covidxr.cli.train import train

BASE = ["experiment=smoke"]


def backbone_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


def changed(a: dict, b: dict, buffers: bool) -> set[str]:
    is_buffer = ("running_mean", "running_var", "num_batches_tracked")
    names = {k for k in a if k.endswith(is_buffer) == buffers}
    return {k for k in names if not torch.equal(a[k], b[k])}


def run_and_resume(
    scheme: str, tmp_path: Path, data_dir: Path, extra=(), epochs: int = 1
) -> tuple[Path, Path]:
    """``epochs`` epochs, then a resumption from last.ckpt for one more; both last.ckpt paths."""
    first, second = tmp_path / "first", tmp_path / "resumed"
    overrides = [*BASE, f"finetune={scheme}", *extra, f"trainer.max_epochs={epochs}"]
    train(compose_config("train", overrides, first, data_dir))
    last = first / "checkpoints" / "last.ckpt"
    overrides = [*overrides, f"ckpt_path={last}", f"trainer.max_epochs={epochs + 1}"]
    train(compose_config("train", overrides, second, data_dir))
    resumed = second / "checkpoints" / "last.ckpt"
    assert torch.load(resumed, weights_only=True)["epoch"] == epochs
    return last, resumed


def optimizer_groups(ckpt: Path) -> list[dict]:
    return torch.load(ckpt, weights_only=True)["optimizer_states"][0]["param_groups"]


def test_linear_probe_never_changes_the_backbone(tmp_path: Path, data_dir: Path) -> None:
    last, resumed = run_and_resume("linear_probe", tmp_path, data_dir)
    before, after = backbone_state(last), backbone_state(resumed)
    assert not changed(before, after, buffers=False)
    assert not changed(before, after, buffers=True)  # BatchNorm in eval mode
    assert [g["name"] for g in optimizer_groups(resumed)] == ["head"]


def test_paper_scheme_trains_the_head_only_after_epoch_one(tmp_path: Path, data_dir: Path) -> None:
    last, resumed = run_and_resume("paper", tmp_path, data_dir)
    before, after = backbone_state(last), backbone_state(resumed)
    assert not changed(before, after, buffers=False)  # weights frozen in the resumed epoch
    assert changed(before, after, buffers=True)  # BatchNorm statistics still updating


def test_gradual_unfreezing_keeps_training_the_backbone_after_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    last, resumed = run_and_resume("gradual", tmp_path, data_dir, epochs=2)  # resumed after k=1
    groups = optimizer_groups(resumed)
    # head, backbone BatchNorm (trained throughout: train_bn), the rest of the backbone (epoch 1)
    assert [g.get("name") for g in groups] == ["head", "backbone", None]
    assert groups[2]["lr"] < groups[0]["lr"]
    convs = {
        k
        for k in changed(backbone_state(last), backbone_state(resumed), buffers=False)
        if "conv" in k or "downsample.0" in k
    }
    assert convs, "the unfrozen backbone stopped learning after the resume"


def test_backbone_learning_rate_multiplier(tmp_path: Path, data_dir: Path) -> None:
    extra = ["finetune.backbone_lr_multiplier=0.1"]
    last, resumed = run_and_resume("full", tmp_path, data_dir, extra)
    groups = {g["name"]: g["lr"] for g in optimizer_groups(resumed)}
    assert groups["backbone"] == pytest.approx(0.1 * groups["head"])
    assert changed(backbone_state(last), backbone_state(resumed), buffers=False)
