"""Where a multirun's jobs run: SLURM and local processes through submitit, Ray. What each would
request for the study's table, and tiny end-to-end sweeps equal to the basic launcher's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import compose_config
from test_multirun import job_dirs, run_cli


def by_seed(sweep_dir: Path) -> dict[str, Path]:
    """A multirun's job folders by their seed override."""
    return {
        next(o for o in overrides if o.startswith("seed=")): folder
        for overrides, folder in job_dirs(sweep_dir).items()
    }


def test_slurm_requests_one_task_per_gpu_for_the_paper_table(
    tmp_path: Path, data_dir: Path
) -> None:
    overrides = ["experiment=paper_table", "trainer=ddp", "trainer.devices=4", "launcher=slurm"]
    overrides += ["hydra.launcher.partition=gpu", "hydra.launcher.account=covid"]
    cfg = compose_config("train", overrides, tmp_path, data_dir, keep_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account) == ("gpu", "covid")
    # DDP under srun: one task per GPU of trainer=ddp
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.timeout_min >= 60 and launcher.max_num_timeout >= 1  # requeued on preemption
    assert cfg.resume == "auto"
    (plugin,) = cfg.trainer.plugins
    assert plugin._target_.endswith("SLURMEnvironment") and plugin.auto_requeue is False
    assert len(cfg.hydra.sweeper.params.backbone.split(",")) == 10  # 30 jobs with 3 seeds


def test_local_launcher_composes(tmp_path: Path, data_dir: Path) -> None:
    cfg = compose_config("train", ["launcher=local"], tmp_path, data_dir, keep_hydra=True)
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher") and cfg.resume == "auto"


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher is not installed (pip install -e '.[ray]')",
)
def test_ray_launcher_requests_the_gpus_of_a_job(tmp_path: Path, data_dir: Path) -> None:
    overrides = ["experiment=paper_table", "trainer=gpu", "launcher=ray"]
    cfg = compose_config("train", overrides, tmp_path, data_dir, keep_hydra=True)
    assert cfg.hydra.launcher.ray.remote.num_gpus == 1
    cfg = compose_config(
        "train", ["launcher=ray", "trainer=cpu"], tmp_path, data_dir, keep_hydra=True
    )
    assert cfg.hydra.launcher.ray.remote.num_gpus == 0  # a CPU job asks for no GPU


def test_submitit_local_sweep_equals_the_basic_launchers(tmp_path: Path, data_dir: Path) -> None:
    sweep = ["-m", "experiment=smoke", "seed=1,2"]
    basic, local = tmp_path / "basic", tmp_path / "local"
    result = run_cli([*sweep, f"hydra.sweep.dir={basic}"], data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli([*sweep, "launcher=local", f"hydra.sweep.dir={local}"], data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (local / ".submitit").is_dir()  # the jobs ran as submitit processes

    basic_jobs, local_jobs = by_seed(basic), by_seed(local)
    assert set(basic_jobs) == set(local_jobs) == {"seed=1", "seed=2"}
    for seed, folder in basic_jobs.items():
        other = local_jobs[seed]
        assert json.loads((other / "metrics.json").read_text(), parse_constant=str) == json.loads(
            (folder / "metrics.json").read_text(), parse_constant=str
        )
        assert (other / "split.csv").read_text() == (folder / "split.csv").read_text()


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher is not installed (pip install -e '.[ray]')",
)
def test_ray_sweep_on_a_local_cluster_equals_the_basic_launchers(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = ["-m", "experiment=smoke", "seed=1,2"]
    basic, ray = tmp_path / "basic", tmp_path / "ray"
    result = run_cli([*sweep, f"hydra.sweep.dir={basic}"], data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # As many CPUs (torch threads) per job as the basic launcher uses, so the sums add up alike.
    ray_args = ["launcher=ray", "hydra.launcher.ray.remote.num_cpus=2"]
    ray_args += [
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
    ]
    result = run_cli([*sweep, *ray_args, f"hydra.sweep.dir={ray}"], data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for seed in ("1", "2"):
        ours = by_seed(ray)[f"seed={seed}"]
        assert json.loads((ours / "metrics.json").read_text(), parse_constant=str) == json.loads(
            (by_seed(basic)[f"seed={seed}"] / "metrics.json").read_text(), parse_constant=str
        )


def test_ray_jobs_ask_for_what_this_machine_has() -> None:
    """The default request is data.num_workers + 1 CPUs capped at this machine's; a request a
    local Ray cluster could never meet is one line instead of a sweep that waits forever."""
    from omegaconf import OmegaConf

    from covidxr.utils.env import available_cpus
    from covidxr.utils.runner import unmet_launch_request

    cfg = OmegaConf.create({"data": {"num_workers": 64}, "cpus": "${job_cpus:${data.num_workers}}"})
    assert cfg.cpus == available_cpus()
    cfg.data.num_workers = 0
    assert cfg.cpus == 1

    def ray(num_cpus: int, address: str | None = None) -> object:
        target = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
        remote = {"num_cpus": num_cpus, "num_gpus": 0}
        return OmegaConf.create(
            {"hydra": {"launcher": {"_target_": target, "ray": {"init": {"address": address},
                                                                "remote": remote}}}}
        )  # fmt: skip

    too_many = available_cpus() + 6
    problem = unmet_launch_request(ray(too_many))
    assert f"num_cpus={too_many}" in problem and f"has {available_cpus()}" in problem
    assert unmet_launch_request(ray(1)) is None
    assert unmet_launch_request(ray(too_many, address="auto")) is None  # a cluster elsewhere


def test_a_run_folder_that_cannot_be_made_is_named_before_hydra_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from covidxr.utils import runner

    afile = tmp_path / "taken.txt"
    afile.write_text("x")
    assert "is a file, not a folder" in runner.unusable_folder(afile)
    assert f"{afile} is a file" in runner.unusable_folder(afile / "run")
    assert runner.unusable_folder(tmp_path / "new" / "run") is None
    monkeypatch.setattr(runner.os, "access", lambda *a: False)  # a read-only share (not root)
    assert "may not be written" in runner.unusable_folder(tmp_path / "new" / "run")


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher is not installed (pip install -e '.[ray]')",
)
def test_a_ray_node_lost_mid_sweep_is_one_line(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """launcher=ray is Ray's launcher with one line and exit 1 for a raylet that died (killed,
    or its heartbeats missed); a job's own error still reaches the sweep as before."""
    import ray.exceptions
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    from covidxr.utils.runner import exit_on_ray_node_failure

    cfg = compose_config("train", ["launcher=ray"], tmp_path, data_dir, keep_hydra=True)
    target = cfg.hydra.launcher._target_
    assert target in {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}

    with pytest.raises(SystemExit) as stopped, exit_on_ray_node_failure(str(tmp_path)):
        raise ray.exceptions.LocalRayletDiedError()
    assert stopped.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: Ray lost a job of the sweep in {tmp_path}: The task's local")
    assert "run the same command again" in line
    with pytest.raises(ray.exceptions.RayTaskError), exit_on_ray_node_failure(str(tmp_path)):
        raise ray.exceptions.RayTaskError("job", "traceback", ValueError("a job's bug"))
