"""covidxr-train as a user launches it: Hydra multiruns and DDP with two CPU processes.

Each test here starts one ``python -m covidxr.cli.train`` process (imports alone take ~10 s), so the
scenarios are grouped: one sweep covers learning rates and a failing job together.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from covidxr.utils import locks


def run_cli(
    args: list[str],
    data_dir: Path,
    cwd: Path,
    extra_env: dict[str, str] | None = None,
    command: str = "train",
) -> subprocess.CompletedProcess:
    """``covidxr-<command> args`` in a subprocess, as a user runs it."""
    env = {**os.environ, "COVIDXR_DATA_DIR": str(data_dir), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"covidxr.cli.{command}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_dirs(sweep: Path) -> dict[tuple[str, ...], Path]:
    """Each job folder of a multirun, keyed by its overrides."""
    jobs = {}
    for folder in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        jobs[tuple(sorted(overrides))] = folder
    return jobs


def test_sweep_over_learning_rates_survives_a_failing_job(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            "experiment=smoke",
            "optimizer.lr=0.001,0.0001",
            "model.head=linear,bogus",
            f"hydra.sweep.dir={sweep}",
        ],
        data_dir,
        tmp_path,
    )
    assert result.returncode != 0, "Hydra reports the failed jobs in its exit code"
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    learning_rates = set()
    for overrides, folder in jobs.items():
        if "model.head=bogus" in overrides:
            failed = json.loads((folder / "failed.json").read_text())
            assert "Unknown head 'bogus'" in failed["error"]
            assert not (folder / "metrics.json").exists()
        else:
            assert "test/acc" in json.loads((folder / "metrics.json").read_text())
            config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
            learning_rates.add(config["optimizer"]["lr"])
    assert learning_rates == {0.001, 0.0001}


def test_ddp_with_two_cpu_processes(tmp_path: Path, data_dir: Path) -> None:
    """Two ranks, an odd number of test images (uneven shards): the record of predictions pairs
    every row with its own file, and the metrics equal a single process's on the same model."""
    from conftest import compose_config

    from covidxr.cli.eval import evaluate

    run_dir = tmp_path / "run"
    overrides = [
        "experiment=smoke",
        "trainer=ddp_sim",
        "logger=wandb",
        "data.per_class=30",
        "data.classes=[COVID,Normal,Lung_Opacity]",  # 3 x 3 test images: shards of 5 and 4
        f"hydra.run.dir={run_dir}",
    ]
    result = run_cli(overrides, data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second rank ran in this folder
    metrics = json.loads((run_dir / "metrics.json").read_text())
    split = list(csv.DictReader((run_dir / "split.csv").open()))
    test_rows = [row for row in split if row["split"] == "test"]
    assert len(test_rows) % 2 == 1
    rows = (run_dir / "confusion_matrix_test.csv").read_text().splitlines()[1:]
    counted = sum(int(x) for row in rows for x in row.split(",")[1:])
    assert counted == len(test_rows)  # each test image once: no DistributedSampler padding
    # The record: one row per test image, in dataset order, each with its own file's label.
    predictions = list(csv.DictReader((run_dir / "predictions_test.csv").open()))
    assert [p["path"] for p in predictions] == [r["path"] for r in test_rows]
    assert [p["label"] for p in predictions] == [r["label"] for r in test_rows]
    # The W&B predictions table reads the same record.
    (table_file,) = (run_dir / "wandb").glob("offline-run-*/files/media/table/test/predictions*")
    table = json.loads(table_file.read_text())
    table_rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    classes = {row["path"]: row["class"] for row in split}
    assert len(table_rows) == len(test_rows)
    assert all(row["true"] == classes[row["path"]] for row in table_rows)
    # One process, the same checkpoint: the same numbers and the same record.
    single_dir = tmp_path / "single"
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    single = evaluate(compose_config("eval", [f"ckpt_path={ckpt}"], single_dir, data_dir))
    test_keys = sorted(k for k in metrics if k.startswith("test/"))
    assert "test/auroc_ci_low" in test_keys and "test/ece" in test_keys
    expected = pytest.approx({k: metrics[k] for k in test_keys}, nan_ok=True)
    assert {k: single[k] for k in test_keys} == expected
    alone = list(csv.DictReader((single_dir / "predictions_test.csv").open()))
    assert [r["path"] for r in alone] == [p["path"] for p in predictions]
    for a, b in zip(alone, predictions, strict=True):
        assert float(a["p_COVID"]) == pytest.approx(float(b["p_COVID"]), abs=1e-5)


def test_sweep_over_two_weight_files_and_two_finetuning_schemes(
    tmp_path: Path, data_dir: Path
) -> None:
    import torch
    from torchvision.models import resnet50

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        files.append(tmp_path / f"resnet50-{seed}.pth")
        torch.save(resnet50().state_dict(), files[-1])
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            "experiment=smoke",
            "backbone=file",
            f"backbone.path={files[0]},{files[1]}",
            "finetune=linear_probe,gradual",
            f"hydra.sweep.dir={sweep}",
        ],
        data_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    for overrides, folder in jobs.items():
        assert "test/acc" in json.loads((folder / "metrics.json").read_text()), overrides
        log = next(folder.glob("*.log")).read_text()
        assert "Loaded all 318 backbone tensors" in log


@pytest.mark.slow
def test_ddp_inside_a_multirun(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            "experiment=smoke",
            "trainer=ddp_sim",
            "optimizer.lr=0.001,0.0001",
            f"hydra.sweep.dir={sweep}",
        ],
        data_dir,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    for folder in jobs.values():
        assert "test/acc" in json.loads((folder / "metrics.json").read_text())
        assert (folder / "train_ddp_process_1.log").is_file()
    assert not (sweep / "0" / "0").exists()  # children did not start sweeps of their own


@pytest.mark.slow
def test_optuna_search(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "optuna"
    args = [
        "hparams_search=optuna",
        "experiment=smoke",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli(args, data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert {"optimizer.lr", "model.dropout", "finetune"} <= set(results["best_params"])
    assert 0.0 <= results["best_value"] <= 1.0


@pytest.mark.slow
def test_optuna_study_is_shared_by_parallel_workers_and_continued(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two trials at once in two submitit processes, then a second command continues the study."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [
        "hparams_search=optuna",
        "experiment=smoke",
        "launcher=local",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
    ]
    sweep = tmp_path / "sweep"  # both commands in one sweep folder, as a requeued search runs
    for _ in range(2):
        result = run_cli([*args, f"hydra.sweep.dir={sweep}"], data_dir, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4  # the second command added to the first one's study
    # New parameters, not the first command's again; each trial in a folder of its own.
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4
    folders = [p for p in sweep.iterdir() if (p / "metrics.json").is_file()]
    assert len(folders) == 4


def test_an_earlier_run_folder_is_never_written_over(tmp_path: Path, data_dir: Path) -> None:
    """Another run into a finished run's folder is refused before Hydra writes anything; the
    same command with resume=auto returns the finished run's numbers without touching it. A
    start refused for a bad option leaves nothing that blocks the corrected command; a folder in
    use by another process is refused."""
    run = tmp_path / "run"
    refused = run_cli(  # refused after the split was written: weights that cannot be fetched
        ["experiment=smoke", "backbone=moco_v2", f"hydra.run.dir={run}"],
        data_dir,
        tmp_path,
        {"COVIDXR_WEIGHTS_DIR": str(tmp_path / "no-weights"), "HTTPS_PROXY": "http://0.0.0.0:9"},
    )
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert {p.name for p in run.iterdir()} <= {
        ".hydra",
        "job.json",
        "failed.json",
        "run.lock",
        "smoke.log",
    }
    first = run_cli(["experiment=smoke", f"hydra.run.dir={run}"], data_dir, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (run / "failed.json").exists()  # the refused attempt's error went with it

    def written(folder: Path) -> dict[Path, bytes]:
        """Everything but the logs, the lock (its holder's pid) and .hydra/ (Hydra records each
        command it starts there)."""
        return {
            f: f.read_bytes()
            for f in folder.rglob("*")
            if f.is_file() and f.suffix not in (".log", ".lock") and ".hydra" not in f.parts
        }

    before = written(run)
    config = (run / ".hydra" / "config.yaml").read_text()
    other = run_cli(["experiment=smoke", "seed=2", f"hydra.run.dir={run}"], data_dir, tmp_path)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith(f"error: hydra.run.dir={run} holds")
    assert (run / ".hydra" / "config.yaml").read_text() == config  # refused before Hydra wrote
    elsewhere = ["experiment=smoke", "seed=2", "resume=auto", f"hydra.run.dir={run}"]
    other_seed = run_cli(elsewhere, data_dir, tmp_path)  # would return seed 42's numbers as 2's
    assert other_seed.returncode == 2
    assert "holds a run started with other settings" in other_seed.stderr
    locks.hold(run / "run.lock")  # as another job running in it would
    try:
        busy = run_cli(
            ["experiment=smoke", "resume=auto", f"hydra.run.dir={run}"], data_dir, tmp_path
        )
    finally:
        locks.release(run / "run.lock")
    assert busy.returncode == 2
    assert f"is in use by another job (process {os.getpid()})" in busy.stderr.splitlines()[-1]
    again = run_cli(["experiment=smoke", "resume=auto", f"hydra.run.dir={run}"], data_dir, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished already" in again.stdout + again.stderr
    assert written(run) == before  # metrics (val/acc_best too), split, checkpoints, config, CSV log
