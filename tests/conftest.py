"""Shared fixtures: tiny synthetic datasets built once per session, the optional real set."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # tests never reach wandb.ai
#: The development copy of the real database, beside the checkout (a user's machine lacks it).
DEV_REAL_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
os.environ.setdefault(
    "COVIDXR_REAL_DATA", os.path.abspath(os.path.join(DEV_REAL_DATA, "covid-radiography-224"))
)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per xdist worker (and its subprocesses): two workers with two threads
    # each on two cores ran the training tests several times slower (oversubscription).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from covidxr.cli import register_configs
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.paths import CONF_DIR
from covidxr.utils.env import real_data_dir

register_configs()


def write_png(path: Path, value: int = 128, size: int = 32, **kwargs) -> Path:
    """A small valid grey PNG (``value`` varies the content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((size, size), value % 256, np.uint8)
    image[: size // 2] = (value * 7) % 256
    assert cv2.imwrite(str(path), image, **kwargs)
    return path


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 phantoms per class for all four classes, 64 px: the suite's shared small dataset."""
    root = tmp_path_factory.mktemp("phantoms") / "COVID-19_Radiography_Dataset"
    classes = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
    return generate_phantoms(root, per_class=24, classes=classes, size=64, seed=0)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The 2,000 real X-rays beside the checkout; tests using it skip where it is absent."""
    root = real_data_dir()
    if root is None:
        pytest.skip(
            f"real chest X-rays not found at {os.environ['COVIDXR_REAL_DATA']} (set "
            "COVIDXR_REAL_DATA to a copy "
            "of the database in its current Kaggle layout to run this test)"
        )
    return root


def compose_config(
    name: str, overrides: list[str], output_dir: Path, data_dir: Path, keep_hydra: bool = False
) -> DictConfig:
    """Compose ``conf/<name>.yaml`` as the Hydra app would, for a run in ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
    HydraConfig().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg.hydra
    return cfg


@pytest.fixture(scope="session", autouse=True)
def _gate_records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Accuracy-gate records of the suite's checkpoints stay in its temp folder, not ~/.cache."""
    previous = os.environ.get("COVIDXR_GATE_DIR")
    os.environ["COVIDXR_GATE_DIR"] = str(tmp_path_factory.mktemp("gates"))
    yield
    if previous is None:
        os.environ.pop("COVIDXR_GATE_DIR", None)
    else:
        os.environ["COVIDXR_GATE_DIR"] = previous


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``paths.data_dir`` for the session, so synthetic phantoms are generated once."""
    return tmp_path_factory.mktemp("data")


#: What the suite's runs write that is large: checkpoints and exported models.
LARGE_OUTPUTS = ("*.ckpt", "*.onnx", "*.pt", "*.pth", "*.tar")


def remove_large_outputs(folder: Path) -> None:
    for pattern in LARGE_OUTPUTS:
        for path in folder.rglob(pattern):
            path.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _small_footprint(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's checkpoints are deleted when it ends (pytest keeps three runs' temp folders)."""
    uses_tmp = "tmp_path" in request.fixturenames
    folder = request.getfixturevalue("tmp_path") if uses_tmp else None
    yield
    if folder is not None:
        remove_large_outputs(folder)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Module- and session-scoped runs' checkpoints too, once every test is done."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        remove_large_outputs(factory.getbasetemp())
