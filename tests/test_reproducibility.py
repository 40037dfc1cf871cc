"""A run is a pure function of its config: the same numbers twice, with any number of workers,
and after a kill -9 and a resume into a new folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from test_multirun import run_cli

from covidxr.cli.train import train
from covidxr.data.loading.sampling import EpochSampler

# Augmented (the default pipeline), two epochs, tiny: what must repeat exactly.
RUN = [
    "experiment=smoke",
    "augment=default",
    "trainer.max_epochs=2",
    "data.persistent_workers=false",
    "callbacks.early_stopping=null",
]


def metrics(run: Path) -> dict[str, float | str]:
    """A run's metrics; an undefined one as the string "NaN", so that equal runs compare equal."""
    return json.loads((run / "metrics.json").read_text(), parse_constant=str)


def test_sampler_is_a_function_of_seed_and_epoch() -> None:
    first, again = EpochSampler(10, seed=3), EpochSampler(10, seed=3)
    assert list(first) == list(again)
    again.set_epoch(1)
    assert [i for i, _ in again] != [i for i, _ in first]  # a new order each epoch
    assert sorted(i for i, _ in again) == list(range(10))  # still a permutation
    weighted = EpochSampler(10, seed=3, weights=[1.0] * 5 + [0.0] * 5)
    assert all(i < 5 for i, _ in weighted)


def test_same_config_same_metrics_whatever_the_worker_count(tmp_path: Path, data_dir: Path) -> None:
    runs = {}
    for name, workers in (("a", 0), ("b", 0), ("workers", 2)):
        folder = tmp_path / name
        train(compose_config("train", [*RUN, f"data.num_workers={workers}"], folder, data_dir))
        runs[name] = metrics(folder)
    assert runs["a"] == runs["b"]  # augmentation included: every key identical
    assert runs["a"] == runs["workers"]


LONG = [*RUN, "trainer.max_epochs=4", "data.num_workers=0"]
ENV = {"PYTHONPATH": str(Path(__file__).parent)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Four epochs in one go, in a subprocess as a user runs it: the numbers to reach again."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli([*LONG, f"hydra.run.dir={folder / 'run'}"], data_dir, folder, ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def test_killed_run_resumes_to_the_numbers_of_an_uninterrupted_one(
    uninterrupted: Path, tmp_path: Path, data_dir: Path
) -> None:
    """kill -9 during epoch 2 of 4, resume from last.ckpt into a new folder: the same end."""
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    kill = ["+callbacks.kill._target_=fault_injection.KillDuring", "+callbacks.kill.epoch=1"]
    result = run_cli([*LONG, *kill, f"hydra.run.dir={killed}"], data_dir, tmp_path, ENV)
    assert result.returncode == -9  # SIGKILL: nothing could be saved on the way out
    assert not (killed / "metrics.json").exists()
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # epoch 1 done, epoch 2 lost
    result = run_cli(
        [*LONG, f"ckpt_path={last}", f"hydra.run.dir={resumed}"], data_dir, tmp_path, ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(resumed) == metrics(uninterrupted)
    best = torch.load(resumed / "checkpoints" / "best.ckpt", weights_only=True)
    whole_best = torch.load(uninterrupted / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] == whole_best["epoch"]


def test_sigterm_then_the_same_command_finishes_with_the_same_numbers(
    uninterrupted: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Preemption: SIGTERM in epoch 2 of 4 writes last.ckpt there and then (mid-epoch, atomic)
    and exits 143; the same command started again (resume=auto) continues that epoch where it
    stopped, in the same folder, to the uninterrupted numbers."""
    run = tmp_path / "run"
    signal_once = [
        "+callbacks.kill._target_=fault_injection.KillDuring",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.signum=15",
        f"+callbacks.kill.once_file={tmp_path / 'signalled'}",
    ]
    command = [*LONG, *signal_once, "resume=auto", "logger=many", f"hydra.run.dir={run}"]
    first = run_cli(command, data_dir, tmp_path, ENV)
    assert first.returncode == 143, first.stderr[-3000:]
    assert not (run / "failed.json").exists() and not (run / "metrics.json").exists()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 1  # written at the signal, in the middle of epoch 2
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] is False
    wandb_id = (run / "wandb_id.txt").read_text()
    again = run_cli(command, data_dir, tmp_path, ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming epoch 2 after its first 2 batches" in again.stdout + again.stderr
    assert metrics(run) == metrics(uninterrupted)
    assert (run / "wandb_id.txt").read_text() == wandb_id  # the same W&B run continues
    epochs = [r.split(",")[0] for r in (run / "csv" / "metrics.csv").read_text().splitlines()]
    assert {"0", "1", "2", "3"} <= set(epochs)  # one continuous CSV log across both starts


@pytest.mark.parametrize("phase", ["test", "report"])
def test_a_signal_while_testing_or_reporting_exits_143_and_resume_completes_the_run(
    phase: str, uninterrupted: Path, tmp_path: Path, data_dir: Path
) -> None:
    """SIGTERM once fit ended (in the test loop, or as the report is written): exit 143, no
    metrics.json, the finished last.ckpt kept; resume=auto tests without fitting again and
    ends with every number of the uninterrupted run (train/*, val/*, val/acc_best too)."""
    run = tmp_path / "run"
    signal_once = [
        "+callbacks.kill._target_=fault_injection.KillDuring",
        f"+callbacks.kill.phase={phase}",
        "+callbacks.kill.batch=0",
        "+callbacks.kill.signum=15",
        f"+callbacks.kill.once_file={tmp_path / 'signalled'}",
    ]
    command = [*LONG, *signal_once, "resume=auto", f"hydra.run.dir={run}"]
    first = run_cli(command, data_dir, tmp_path, ENV)
    assert first.returncode == 143, first.stderr[-3000:]
    assert not (run / "metrics.json").exists() and not (run / "failed.json").exists()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 3  # the finished run's, not a "mid-epoch" one written at the signal
    assert last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["is_last_batch"] is True
    again = run_cli(command, data_dir, tmp_path, ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the fit of" in again.stdout + again.stderr  # tested, not fitted again
    assert metrics(run) == metrics(uninterrupted)


WORKERS = [
    "experiment=smoke",
    "augment=default",
    "trainer.max_epochs=3",
    "data.batch_size=2",
    "data.num_workers=2",  # persistent, as the data configs default
    "callbacks.early_stopping=null",
]


@pytest.fixture(scope="module")
def without_workers(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The run the worker tests must reach, uninterrupted and with no worker process."""
    reference = tmp_path_factory.mktemp("without_workers")
    base = [*WORKERS[:-2], "data.num_workers=0", WORKERS[-1]]
    train(compose_config("train", base, reference, data_dir))
    return reference


@pytest.mark.parametrize("signum", [9, pytest.param(15, marks=pytest.mark.slow)])
def test_resume_with_worker_processes_is_exact(
    signum: int, without_workers: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Two loader workers, batch 2, killed (SIGKILL) or preempted (SIGTERM) inside epoch 2 of 3,
    then the same command again: the numbers of an uninterrupted run with no workers.

    Lightning makes a resumed run's first training iterator before it sets the sampler's epoch,
    and workers draw their indices at once: the resumed epoch used to replay epoch 1's order.
    """
    run = tmp_path / "run"
    signal_once = [
        "+callbacks.kill._target_=fault_injection.KillDuring",
        "+callbacks.kill.epoch=1",
        "+callbacks.kill.batch=5",
        f"+callbacks.kill.signum={signum}",
        f"+callbacks.kill.once_file={tmp_path / 'signalled'}",
    ]
    command = [*WORKERS, *signal_once, "resume=auto", f"hydra.run.dir={run}"]
    first = run_cli(command, data_dir, tmp_path, ENV)
    assert first.returncode == (-9 if signum == 9 else 143), first.stderr[-3000:]
    again = run_cli(command, data_dir, tmp_path, ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert metrics(run) == metrics(without_workers)


@pytest.mark.parametrize("earlier_best", [0.9, 0.1])
def test_resumed_run_keeps_the_best_of_both_segments(
    earlier_best: float, tmp_path: Path, data_dir: Path
) -> None:
    """The earlier segment's best score and file carry over into the new folder."""
    first = tmp_path / "first"
    train(compose_config("train", [*RUN, "trainer.max_epochs=1"], first, data_dir))
    last = first / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    for key, state in checkpoint["callbacks"].items():  # pretend the first segment did better/worse
        if key.startswith("ModelCheckpoint") and state.get("monitor") == "val/acc":
            state["best_model_score"] = torch.tensor(earlier_best)
    checkpoint["val_acc_best"] = earlier_best
    torch.save(checkpoint, last)
    second = tmp_path / "second"
    overrides = [*RUN, "trainer.max_epochs=2", f"ckpt_path={last}"]
    result = train(compose_config("train", overrides, second, data_dir))
    if earlier_best == 0.9:  # above anything this tiny run reaches: the earlier best stands
        assert result["val/acc_best"] == pytest.approx(0.9)
        best = torch.load(second / "checkpoints" / "best.ckpt", weights_only=True)
        assert best["epoch"] == 0  # the copied file of the first segment
    else:
        assert result["val/acc_best"] >= 0.1 and result["val/acc_best"] == result["val/acc"]
