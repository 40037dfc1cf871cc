"""Checkpoints written before the 0.2 layout (model-owned preprocessing) still load and evaluate.

``fixtures/checkpoint_v0.1.0.pt`` is ``best.ckpt`` of ``covidxr-train experiment=smoke`` at
commit 15a3c79, with every tensor replaced by its shape (a ResNet50 is 95 MB); the tests put
tensors of those shapes back and keep everything else as that version wrote it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from covidxr.cli.eval import evaluate
from covidxr.data.datamodule import SyntheticDataModule
from covidxr.inference.predictors import TorchPredictor
from covidxr.models.module import XRayClassifier
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v0.1.0.pt"


@pytest.fixture(scope="module")
def old_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    saved = torch.load(FIXTURE, weights_only=True)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, (shape, dtype) in saved.pop("state_dict_shapes").items():
        if key.endswith("running_var"):
            state[key] = torch.ones(shape)
        elif dtype.startswith("float"):
            state[key] = torch.randn(shape, generator=generator) * 0.05
        else:
            state[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
    saved.pop("source")
    run = tmp_path_factory.mktemp("old_run")
    path = run / "checkpoints" / "best.ckpt"
    path.parent.mkdir()
    torch.save({**saved, "state_dict": state}, path)
    return path


def test_old_checkpoint_loads_with_its_preprocessing(old_checkpoint: Path) -> None:
    assert "image_size" not in torch.load(old_checkpoint, weights_only=True)["hyper_parameters"]
    model = XRayClassifier.from_checkpoint(old_checkpoint)
    prep = model.preprocessing
    assert prep.image_size == 32 and prep.class_names == ("COVID", "Normal")
    assert prep.mean == IMAGENET_MEAN and prep.std == IMAGENET_STD


def test_old_checkpoint_predicts(old_checkpoint: Path) -> None:
    predictor = TorchPredictor.from_checkpoint(old_checkpoint)
    image = torch.from_numpy(np.full((1, 1, 32, 32), 128, np.uint8))
    probs = predictor(image)
    assert probs.shape == (1, 2) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_old_checkpoint_evaluates(old_checkpoint: Path, tmp_path: Path, data_dir: Path) -> None:
    """Its data module settings (with mean/std, which moved to the model) rebuild the data."""
    root = tmp_path / "phantoms"
    split_dir = tmp_path / "split"
    SyntheticDataModule(
        root, per_class=16, phantom_size=64, image_size=32, output_dir=split_dir
    ).setup()
    overrides = [
        f"ckpt_path={old_checkpoint}",
        f"data.root={root}",
        f"split_file={split_dir / 'split.csv'}",
        "data.num_workers=0",
    ]
    metrics = evaluate(compose_config("eval", overrides, tmp_path / "eval", data_dir))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (tmp_path / "eval" / "metrics.json").is_file()
