"""Every environment variable covidxr reads, with its default, in one place.

| variable | default | meaning |
|---|---|---|
| ``COVIDXR_DATA_DIR`` | ``<cwd>/data`` | where the configs look for datasets (``paths.data_dir``) |
| ``COVIDXR_WEIGHTS_DIR`` | ``~/.cache/covidxr/weights`` | the pretrained weights cache |
| ``COVIDXR_DOWNLOAD_TIMEOUT`` | ``30`` | seconds a download may stall before it gives up |
| ``COVIDXR_REAL_DATA`` | unset | real X-rays (Kaggle layout) for the benchmarks and tests |
| ``NO_ALBUMENTATIONS_UPDATE`` | ``1`` | albumentations does not look for updates (offline) |
| ``WANDB_MODE`` | unset | W&B runs offline unless an API key is configured |
"""

from __future__ import annotations

import os
from pathlib import Path

#: Set for this process unless the user set them: covidxr works offline by default.
PROCESS_DEFAULTS = {"NO_ALBUMENTATIONS_UPDATE": "1"}


def apply_process_defaults() -> None:
    for name, value in PROCESS_DEFAULTS.items():
        os.environ.setdefault(name, value)


def available_cpus() -> int:
    """CPUs this process may use: the smallest of the CPU affinity mask, a scheduler's allocation
    (``SLURM_CPUS_PER_TASK``) and a container's cgroup quota (``/sys/fs/cgroup/cpu.max``)."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()]
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit():
        counts.append(int(slurm))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            counts.append(int(quota) // int(period))
    except (OSError, ValueError):
        pass
    return max(1, min(c for c in counts if c))


def compute_threads() -> int:
    """Threads for computing: ``OMP_NUM_THREADS`` when set (a scheduler's or the user's choice),
    else every CPU this process may use."""
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    return (
        min(int(wanted), available_cpus())
        if wanted.isdigit() and int(wanted) > 0
        else (available_cpus())
    )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx512_bf16``, ``avx512_vnni``, ...) on Linux; empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def data_dir(default: str | os.PathLike) -> str:
    return os.environ.get("COVIDXR_DATA_DIR") or str(default)


def weights_dir() -> Path:
    return Path(os.environ.get("COVIDXR_WEIGHTS_DIR", "~/.cache/covidxr/weights")).expanduser()


def download_timeout() -> float:
    """Seconds a connection or a single read may stall before a download gives up."""
    return float(os.environ.get("COVIDXR_DOWNLOAD_TIMEOUT", "30"))


def real_data_dir() -> Path | None:
    """Real X-rays named by ``COVIDXR_REAL_DATA``, or None when it is unset or not a folder."""
    path = os.environ.get("COVIDXR_REAL_DATA")
    return Path(path) if path and Path(path).is_dir() else None


def wandb_offline() -> bool:
    """W&B runs offline unless an API key is configured (or WANDB_MODE says otherwise)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def machine_record() -> dict[str, object]:
    """What decides a run's numbers beyond its config: library versions, the torch CPU kernels
    (the same config sums in another order on an AVX2 and an AVX-512 machine), threads, GPU,
    and the code's git commit (``dirty``: uncommitted changes)."""
    import platform
    import subprocess
    from importlib.metadata import version

    import torch

    record: dict[str, object] = {
        "covidxr": version("covidxr"),
        "torch": torch.__version__,
        "lightning": version("lightning"),
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    source = Path(__file__).resolve().parents[2]
    try:
        git = ["git", "-C", str(source)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:  # no git on this machine
        return record | {"git_commit": None, "git_dirty": None}
    if commit.returncode != 0:  # installed from a wheel, not a checkout
        return record | {"git_commit": None, "git_dirty": None}
    return record | {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}
