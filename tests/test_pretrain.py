"""covidxr-pretrain: lightly's methods on unlabeled X-rays, the trunk and its passport as
``backbone=local:<name>``, exact resume with the queue, and bad input as one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from covidxr.cli import register_configs
from covidxr.cli.pretrain import pretrain
from covidxr.cli.train import train
from covidxr.pretraining.module import QUEUES_KEY
from covidxr.utils.errors import ConfigError, DatasetError
from covidxr.weights.local import find_spec, local_keys

TINY = ["data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "data.persistent_workers=false", "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
        "ssl.method.queue_size=16", "ssl.method.hidden_dim=64", "logger=none"]  # fmt: skip


@pytest.fixture(autouse=True)
def _weights_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COVIDXR_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "weights"))


def split_of(phantoms: Path, out: Path) -> Path:
    """A split.csv over the phantoms: every 4th image val, every 4th+1 test, the rest train."""
    rows = []
    for cls in ("COVID", "Normal"):
        files = sorted((phantoms / cls / "images").glob("*.png"))
        for i, f in enumerate(files):
            split = ("val", "test", "train", "train")[i % 4]
            rows.append([f"{cls}/images/{f.name}", int(cls == "Normal"), cls, split, f.name])
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "class", "split", "group"])
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def pretrained(phantoms: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    base = tmp_path_factory.mktemp("pretrain")
    weights = tmp_path_factory.getbasetemp() / "weights"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COVIDXR_WEIGHTS_DIR", str(weights))
        split = split_of(phantoms, base / "split.csv")
        run = base / "run"
        cfg = compose_config(
            "pretrain", [*TINY, f"data.root={phantoms}", f"exclude_split={split}", "name=tiny"],
            run, data_dir,
        )  # fmt: skip
        metrics = pretrain(cfg)
    return run, split, metrics


def test_pretrain_writes_a_trunk_with_passport_installed_as_a_local_weight(
    pretrained, phantoms: Path, data_dir: Path, tmp_path: Path
) -> None:
    run, split, metrics = pretrained
    assert "val/knn_acc" in metrics and 0 <= metrics["val/knn_acc"] <= 1  # the kNN monitor ran
    passport = __import__("json").loads((run / "trunk.json").read_text())
    with split.open() as fh:
        held = {r["path"] for r in csv.DictReader(fh) if r["split"] in ("val", "test")}
    seen = {r["path"] for r in csv.DictReader((run / "pretrain_images.csv").open())}
    assert seen and not any(p.endswith(h) for p in seen for h in held)  # never saw val/test
    assert passport["excluded_images"] == len(held)
    assert passport["images"] == len(seen) and len(passport["images_sha256"]) == 64
    assert (passport["method"], passport["start_weight"], passport["input_size"]) == (
        "moco_v2", "random", 32)  # fmt: skip
    assert passport["views"]["hf_prob"] == 0.0  # no horizontal flip by default
    assert "local:tiny" in local_keys()
    spec = find_spec("local:tiny")
    assert spec.mean == tuple(passport["mean"]) and spec.native_size == 32
    register_configs()
    cfg = compose_config(
        "train", ["experiment=smoke", "backbone=local:tiny", "data.image_size=32",
                  "trainer.max_epochs=1", "test=false"], tmp_path / "ft", data_dir,
    )  # fmt: skip
    assert cfg.backbone.key == "local:tiny"
    train(cfg)  # fine-tunes from the trunk: strict loading of every tensor
    state = torch.load(run / "trunk.pth", weights_only=True)
    assert not any(k.startswith("fc.") for k in state) and len(state) == 318


def test_the_queue_and_momentum_encoder_are_in_the_checkpoint(pretrained, data_dir: Path) -> None:
    run, _, _ = pretrained
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    bank = checkpoint[QUEUES_KEY]["method.criterion.memory_bank"]
    assert bank["bank"].shape == (16, 128) and int(bank["bank_ptr"]) == (2 * 2 * 4) % 16
    assert any(k.startswith("method.trunk_momentum.") for k in checkpoint["state_dict"])
    cfg = compose_config("pretrain", TINY, run.parent / "reload", data_dir)
    model = instantiate(cfg.model, _convert_="object")
    model.on_load_checkpoint(checkpoint)
    queue = model.method.criterion.memory_bank
    assert torch.equal(queue.bank, bank["bank"]) and torch.equal(queue.bank_ptr, bank["bank_ptr"])


def test_a_second_run_may_not_take_a_local_name(pretrained, phantoms, data_dir, tmp_path) -> None:
    cfg = compose_config("pretrain", [*TINY, f"data.root={phantoms}", "name=tiny"], tmp_path,
                         data_dir)  # fmt: skip
    with pytest.raises(Exception, match="local:tiny exists already"):
        pretrain(cfg)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("ssl.method.queue_size=100000", ConfigError, "larger than the"),
        ("data.batch_size=1", ConfigError, "too small for moco_v2"),
        ("data.batch_size=5000", DatasetError, "fewer than data.batch_size"),
        ("ssl.views.cj_sat=0.4", ConfigError, "colour jitter means nothing"),
        ("data.root={empty}", DatasetError, "No image files under"),
    ],
)
def test_bad_input_is_one_line_before_any_compute(
    override, error, message, phantoms, data_dir, tmp_path
) -> None:
    (tmp_path / "empty").mkdir()
    cfg = compose_config(
        "pretrain", [*TINY, f"data.root={phantoms}", override.format(empty=tmp_path / "empty")],
        tmp_path / "run", data_dir,
    )  # fmt: skip
    with pytest.raises(Exception) as raised:
        pretrain(cfg)
    found = raised.value
    while not isinstance(found, error) and found.__cause__ is not None:
        found = found.__cause__
    assert isinstance(found, error) and message in str(found)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_views_are_a_function_of_their_seed_and_byol_runs(phantoms, data_dir, tmp_path) -> None:
    byol = [o for o in TINY if "queue_size" not in o]  # BYOL has no queue
    cfg = compose_config("pretrain", [*byol, "ssl=byol"], tmp_path, data_dir)
    views = instantiate(cfg.data, root=str(phantoms)).views
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))  # dark left, bright right
    first, again = views(grey, 7), views(grey, 7)
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].dtype == torch.uint8 and first[0].shape == (1, 32, 32)
    model = instantiate(cfg.model, _convert_="object")
    batch = [model.normalize(torch.stack([views(grey, s)[i] for s in range(4)])) for i in (0, 1)]
    loss = model.method.loss(model.trunk, batch, 0.0)
    assert (
        torch.isfinite(loss) and -1.0 <= float(loss.detach()) <= 1.0
    )  # negative cosine similarity


@pytest.mark.slow
def test_killed_or_preempted_pretraining_resumes_to_the_uninterrupted_trunk(
    phantoms: Path, data_dir: Path, tmp_path: Path
) -> None:
    """kill -9 in epoch 2 of 3 then ckpt_path into a new folder, and SIGTERM in epoch 2 then the
    same command (resume=auto): both end with the uninterrupted run's trunk, bit for bit (the
    queue, the momentum encoder and the views' seeds all come back)."""
    from test_multirun import run_cli

    env = {"PYTHONPATH": str(Path(__file__).parent),
           "COVIDXR_WEIGHTS_DIR": str(tmp_path / "weights")}  # fmt: skip
    common = [*TINY, "trainer.max_epochs=3", f"data.root={phantoms}", "replace_weight=true"]
    kill = ["+callbacks.kill._target_=fault_injection.KillDuring", "+callbacks.kill.epoch=1"]

    def run(folder: str, *extra: str):
        args = [*common, *extra, f"hydra.run.dir={tmp_path / folder}"]
        return run_cli(args, data_dir, tmp_path, env, command="pretrain")

    assert run("whole").returncode == 0
    trunk = torch.load(tmp_path / "whole" / "trunk.pth", weights_only=True)

    killed = run("killed", *kill)
    assert killed.returncode == -9 and not (tmp_path / "killed" / "trunk.pth").exists()
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed = run("resumed", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    once = [*kill, "+callbacks.kill.signum=15", f"+callbacks.kill.once_file={tmp_path / 'once'}"]
    first = run("preempted", *once, "resume=auto")
    assert first.returncode == 143, first.stderr[-3000:]
    again = run("preempted", *once, "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]

    for folder in ("resumed", "preempted"):
        state = torch.load(tmp_path / folder / "trunk.pth", weights_only=True)
        assert state.keys() == trunk.keys()
        assert all(torch.equal(state[k], trunk[k]) for k in trunk), folder


def test_the_same_config_pretrains_the_same_trunk(phantoms: Path, data_dir: Path, tmp_path: Path):
    """Heads, queue, views and steps all follow ``seed``: twice the same trunk, bit for bit."""
    trunks = []
    for run in ("a", "b"):
        overrides = [*TINY, "trainer.max_epochs=1", f"data.root={phantoms}", f"name=same-{run}"]
        pretrain(compose_config("pretrain", overrides, tmp_path / run, data_dir))
        trunks.append(torch.load(tmp_path / run / "trunk.pth", weights_only=True))
    assert all(torch.equal(trunks[0][k], trunks[1][k]) for k in trunks[0])


def test_a_trunk_that_ended_at_the_uninformative_loss_is_called_collapsed(caplog) -> None:
    """MoCo's InfoNCE over a queue of 1,024 is ln(1,025) = 6.93 when every image looks alike:
    a run that ends there learned nothing, and says so; BYOL's loss cannot show it."""
    from covidxr.cli.pretrain import collapsed
    from covidxr.pretraining.methods import BYOL, MoCoV2

    moco = MoCoV2(queue_size=1024, hidden_dim=32, projection_dim=8)
    assert collapsed(moco, 6.927, "xray") and "local:xray collapsed" in caplog.text
    assert not collapsed(moco, 5.4, "xray") and not collapsed(moco, None, "xray")
    assert not collapsed(BYOL(hidden_dim=32, projection_dim=8), -0.99, "xray")
