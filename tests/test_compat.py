"""Checkpoints of earlier versions still load, predict and evaluate.

``fixtures/checkpoint_v0.1.0.pt`` is ``best.ckpt`` of ``covidxr-train experiment=smoke`` at
commit 15a3c79 (before the model recorded its preprocessing); ``checkpoint_v0.2.0.pt`` the same at
commit bdb7cc1 (before the layered package: split options threaded one by one, preprocessing in
``inference``). Every tensor is replaced by its shape (a ResNet50 is 95 MB); the tests put tensors
of those shapes back and keep everything else as that version wrote it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

from covidxr.cli.eval import evaluate
from covidxr.data.loading.datamodule import SyntheticDataModule
from covidxr.inference.predictors import TorchPredictor
from covidxr.models.module import XRayClassifier
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["checkpoint_v0.1.0.pt", "checkpoint_v0.2.0.pt"])
def old_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    saved = torch.load(FIXTURES / request.param, weights_only=True)
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
    predictions = (tmp_path / "eval" / "predictions_test.csv").read_text().splitlines()
    tested = [r for r in (split_dir / "split.csv").read_text().splitlines() if ",test," in r]
    assert len(predictions) == 1 + len(tested)


def test_the_fixtures_are_what_they_say() -> None:
    """v0.1.0 recorded no input size in the model; v0.2.0 did, with flat split options."""
    v1 = torch.load(FIXTURES / "checkpoint_v0.1.0.pt", weights_only=True)
    v2 = torch.load(FIXTURES / "checkpoint_v0.2.0.pt", weights_only=True)
    assert "image_size" not in v1["hyper_parameters"]
    assert v2["hyper_parameters"]["image_size"] == 32
    assert v2["datamodule_hyper_parameters"]["dedup"] == "group"
