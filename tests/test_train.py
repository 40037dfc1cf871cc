"""covidxr-train and covidxr-eval in-process: run folders, metrics, eval parity, resume, errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra.errors import ConfigCompositionException

from covidxr.cli.eval import evaluate
from covidxr.cli.train import train
from covidxr.models.metrics import METRIC_NAMES
from covidxr.utils import locks
from covidxr.utils.errors import DatasetError, DiskFullError

SMOKE = ["experiment=smoke"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One epoch of the smoke experiment, shared by the tests that read its run folder."""
    run_dir = tmp_path_factory.mktemp("smoke_run")
    train(compose_config("train", SMOKE, run_dir, data_dir))
    return run_dir


def read_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_run_folder_holds_everything_the_design_promises(smoke_run: Path) -> None:
    for name in (
        "split.csv",
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "confusion_matrix_test.csv",
        "confusion_matrix_test.png",
        "csv/metrics.csv",
    ):
        assert (smoke_run / name).is_file(), name
    rows = (smoke_run / "confusion_matrix_test.csv").read_text().splitlines()
    assert rows[0] == "true \\ predicted,COVID,Normal"
    assert sum(int(x) for row in rows[1:] for x in row.split(",")[1:]) == 4  # the test split


def test_metrics_json_has_every_stage_metric(smoke_run: Path) -> None:
    metrics = read_metrics(smoke_run)
    expected = {f"{stage}/{m}" for stage in ("train", "val", "test") for m in METRIC_NAMES}
    assert expected | {"val/acc_best", "train/loss", "val/loss", "test/loss"} <= set(metrics)
    assert all(0.0 <= metrics[f"test/{m}"] <= 1.0 for m in METRIC_NAMES)


def test_timings_say_where_the_jobs_time_went(smoke_run: Path) -> None:
    """timings.json: every phase of the job, each nested one within its outer phase."""
    phases = json.loads((smoke_run / "timings.json").read_text())
    for name in ("index", "model", "fit", "fit/epoch 1", "fit/validation", "test", "report"):
        assert phases[name] > 0, name
    assert 0 < phases["fit/checkpoint writes"] + phases["fit/validation"] < phases["fit/epoch 1"]
    assert phases["fit/epoch 1"] < phases["fit"]
    assert 0 < phases["report/bootstrap"] < phases["report"]
    assert sum(phases.get(f"index/{n}", 0) for n in ("pHash", "verify")) < phases["index"]


def test_checkpoints_load_with_weights_only(smoke_run: Path) -> None:
    checkpoint = torch.load(smoke_run / "checkpoints/best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["class_names"] == ["COVID", "Normal"]
    assert checkpoint["datamodule_class"].endswith("SyntheticDataModule")


def test_eval_reproduces_the_training_runs_test_metrics(
    smoke_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    ckpt = smoke_run / "checkpoints" / "best.ckpt"
    metrics = evaluate(compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path, data_dir))
    trained = read_metrics(smoke_run)
    test_keys = [k for k in trained if k.startswith("test/")]
    assert test_keys
    expected = pytest.approx({k: trained[k] for k in test_keys}, nan_ok=True)
    assert {k: metrics[k] for k in test_keys} == expected
    assert read_metrics(tmp_path) == metrics
    assert (tmp_path / "split.csv").read_text() == (smoke_run / "split.csv").read_text()


def test_eval_of_a_checkpoint_without_its_run_folder_says_what_to_pass(
    smoke_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    lonely = tmp_path / "a" / "b" / "model.ckpt"
    lonely.parent.mkdir(parents=True)
    lonely.write_bytes((smoke_run / "checkpoints" / "best.ckpt").read_bytes())
    cfg = compose_config("eval", [f"ckpt_path={lonely}"], tmp_path / "out", data_dir)
    with pytest.raises(FileNotFoundError, match="split_file="):
        evaluate(cfg)
    cfg = compose_config(
        "eval",
        [f"ckpt_path={lonely}", f"split_file={smoke_run / 'split.csv'}"],
        tmp_path / "out2",
        data_dir,
    )
    assert "test/acc" in evaluate(cfg)


def test_resume_from_last_checkpoint_continues_with_the_same_split(
    smoke_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    last = smoke_run / "checkpoints" / "last.ckpt"
    overrides = [*SMOKE, f"ckpt_path={last}", "trainer.max_epochs=2"]
    train(compose_config("train", overrides, tmp_path, data_dir))
    assert (tmp_path / "split.csv").read_text() == (smoke_run / "split.csv").read_text()
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1  # the second epoch (0-based) was trained, not the first again
    first = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 2 * first["global_step"]


def check_one_batch_each(cfg, metrics: dict[str, float], run_dir: Path) -> None:
    """fast_dev_run: one batch of each stage was tested and reported, no checkpoint was left."""
    assert 0.0 <= metrics["test/acc"] <= 1.0 and 0.0 <= metrics["val/acc"] <= 1.0
    tested = (run_dir / "predictions_test.csv").read_text().splitlines()[1:]
    split = (run_dir / "split.csv").read_text().splitlines()[1:]
    assert len(tested) == min(cfg.data.batch_size, sum(",test," in row for row in split))
    assert not list(run_dir.rglob("*.ckpt"))


@pytest.mark.parametrize("experiment", ["smoke", "demo"])
def test_experiments_under_fast_dev_run(experiment: str, tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("train", [f"experiment={experiment}", "debug=fdr"], tmp_path, data_dir)
    check_one_batch_each(cfg, train(cfg), tmp_path)


def test_paper_experiment_without_the_database_says_where_to_get_it(
    tmp_path: Path, data_dir: Path
) -> None:
    overrides = ["experiment=paper", "debug=fdr", "backbone=random"]  # no weights download
    cfg = compose_config("train", overrides, tmp_path, data_dir)
    with pytest.raises(DatasetError, match=r"kaggle\.com") as err:
        train(cfg)
    assert str(data_dir / "COVID-19_Radiography_Dataset") in str(err.value)
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert "DatasetError" in failed["error"]


@pytest.mark.slow
def test_paper_experiment_on_the_real_database(
    real_data: Path, tmp_path: Path, data_dir: Path
) -> None:
    overrides = [
        "experiment=paper",
        "debug=fdr",
        "backbone=random",
        f"data.root={real_data}",
        "data.num_workers=0",
    ]
    cfg = compose_config("train", overrides, tmp_path, data_dir)
    check_one_batch_each(cfg, train(cfg), tmp_path)


def test_four_classes_report_per_class_metrics(tmp_path: Path, data_dir: Path) -> None:
    classes = "data.classes=[COVID,Normal,Lung_Opacity,Viral Pneumonia]"
    overrides = [*SMOKE, classes, "+trainer.limit_train_batches=1", "model.class_weights=auto"]
    metrics = train(compose_config("train", overrides, tmp_path, data_dir))
    for name in ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia"):
        assert f"test/sensitivity/{name}" in metrics
    assert "test/auroc" in metrics
    header = (tmp_path / "confusion_matrix_test.csv").read_text().splitlines()[0]
    assert header.endswith("Lung_Opacity,Viral Pneumonia")


def test_mistyped_override_is_a_clear_hydra_error(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_config("train", ["optimizer.lrr=0.1"], tmp_path, data_dir)
    with pytest.raises(ConfigCompositionException, match="optimizer"):
        compose_config("train", ["optimizer=adamm"], tmp_path, data_dir)


def test_optimized_metric_is_returned_to_sweepers(tmp_path: Path, data_dir: Path) -> None:
    from covidxr.cli import train as train_module

    cfg = compose_config("train", [*SMOKE, "debug=fdr"], tmp_path, data_dir)
    returned = train_module.main(cfg)  # hydra.main passes a given cfg through
    assert returned == read_metrics(tmp_path)["val/acc_best"]


@pytest.mark.slow
def test_training_on_real_xrays_beats_chance(
    real_data: Path, tmp_path: Path, data_dir: Path
) -> None:
    """64 px, 600 real images, 6 epochs from random init: clearly better than a coin."""
    overrides = [
        "data=radiography",
        f"data.root={real_data}",
        "data.image_size=64",
        "data.limit_per_class=300",
        "data.batch_size=16",
        "data.num_workers=2",
        "trainer=cpu",
        "trainer.max_epochs=6",
        "scheduler=cosine",
        "callbacks.rich_progress_bar=null",
    ]
    metrics = train(compose_config("train", overrides, tmp_path, data_dir))
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith("test/")}
    # Better than a coin with 95% confidence (60 test images), not by a lucky margin.
    assert metrics["test/auroc_ci_low"] > 0.5, shown
    assert metrics["test/acc"] >= 0.6, shown


def test_compiled_models_keep_checkpoints_loadable() -> None:
    """compile=true compiles the trunk in place: state_dict keys stay those of the plain model."""
    from covidxr.models.module import XRayClassifier

    compiled, plain = XRayClassifier(compile=True), XRayClassifier()
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(compiled.state_dict())


def test_train_false_tests_the_given_checkpoint(
    smoke_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    best = smoke_run / "checkpoints" / "best.ckpt"
    overrides = [*SMOKE, "train=false", f"ckpt_path={best}"]
    metrics = train(compose_config("train", overrides, tmp_path, data_dir))
    trained = read_metrics(smoke_run)
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"])
    assert metrics["test/loss"] == pytest.approx(trained["test/loss"])  # not a fresh model's
    from covidxr.cli import train as train_module

    cfg = compose_config("train", overrides, tmp_path / "again", data_dir)
    assert train_module.main(cfg) is None  # val/acc_best was never logged: reported, no crash


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=0"], "data.image_size=0: give an integer >= 32"),
        (["data.classes=[COVID]"], "data.classes=['COVID']: give 2 to 4 classes"),
        (["data.batch_size=0"], "data.batch_size=0"),
        (["data.split_fractions=[0.9,0.2,0.1]"], "data.split_fractions="),
        (["train=false"], "train=false needs ckpt_path="),
        (["backbone=file"], "backbone.path must be given"),
        (["model.dropout=1.5"], "model.dropout=1.5"),
        (["resume=yes"], "resume=yes: choose one of ['never', 'auto']"),
        (["seed=abc"], "seed=abc: give an integer >= 0"),
        (["seed=-1"], "seed=-1: give an integer >= 0"),
        (["seed=1.5"], "seed=1.5: give an integer >= 0"),
        (["data.dedup=yes"], "data.dedup='yes': choose one of"),
        (["+data.limt_per_class=5"], "data.limt_per_class is not an option"),
        (["model.positive_class=Pneumonia"], "model.positive_class=Pneumonia is not one of"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    overrides: list[str], message: str, tmp_path: Path, data_dir: Path, capsys
) -> None:
    from covidxr.cli import train as train_module

    cfg = compose_config("train", [*SMOKE, *overrides], tmp_path, data_dir)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "checkpoints").exists()  # found before any training


def test_callbacks_none_writes_no_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    """Without a checkpoint callback Lightning would add its own (280 MB at 224 px)."""
    metrics = train(compose_config("train", [*SMOKE, "callbacks=none"], tmp_path, data_dir))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert not list(tmp_path.rglob("*.ckpt"))


def test_synthetic_data_on_a_real_dataset_folder_points_at_data_radiography(
    phantoms: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    from covidxr.cli import train as train_module

    cfg = compose_config("train", [*SMOKE, f"data.root={phantoms.parent}"], tmp_path, data_dir)
    (phantoms.parent / "notes.txt").write_text("a user's folder, no manifest")
    with pytest.raises(SystemExit):
        train_module.main(cfg)
    assert "data=radiography" in capsys.readouterr().err


def test_every_file_a_run_writes_is_readable_like_any_other_output(
    smoke_run: Path, data_dir: Path
) -> None:
    """Atomic writes go through a private temporary file: the result still gets the mode any
    file gets under the user's umask, so a team sharing a run folder or a dataset (its hash
    cache included) can read all of it."""
    from covidxr.utils.io import current_umask

    expected = 0o666 & ~current_umask()
    files = [f for f in [*smoke_run.rglob("*"), *data_dir.rglob(".covidxr-*")] if f.is_file()]
    assert any(f.name == ".covidxr-phash.json" for f in files)
    assert {
        f: oct(f.stat().st_mode & 0o777) for f in files if f.stat().st_mode & 0o777 != expected
    } == {}


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    import os

    from covidxr.utils.io import write_json

    old = os.umask(0o027)
    try:
        path = write_json(tmp_path / "shared.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_a_gpu_trainer_without_a_gpu_is_one_line_before_indexing(
    tmp_path: Path, data_dir: Path, capsys
) -> None:
    from covidxr.cli import train as train_module

    cfg = compose_config("train", [*SMOKE, "trainer=gpu"], tmp_path, data_dir)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(cfg)
    assert exit_info.value.code == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "split.csv").exists()  # nothing was indexed


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB file system: less than a ResNet50 checkpoint (skipped where mounting is refused)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    locks.release(folder / "run.lock")
    subprocess.run(["umount", "--lazy", str(folder)], check=True)


def test_a_full_disk_while_checkpointing_is_one_error_and_leaves_no_partial_file(
    small_disk: Path, data_dir: Path
) -> None:
    cfg = compose_config("train", ["experiment=smoke"], small_disk, data_dir)
    with pytest.raises(DiskFullError, match=rf"No space left in {small_disk}/checkpoints") as err:
        train(cfg)
    assert "MB free, at least" in str(err.value)
    assert not list(small_disk.rglob("*.part"))
    failed = json.loads((small_disk / "failed.json").read_text())
    assert "DiskFullError" in failed["error"]
    assert (small_disk / "split.csv").is_file()  # a run that had started keeps its files
