"""covidxr's default training against the plain loop a user writes (``plain_loop``), on X-rays
neither sees during training or selection: per seed, AUROC and accuracy on a held-out part of the
dev set and each one's wall time (both as fresh processes, imports included), then the paired
difference over seeds with its t-interval."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from covidxr.data.formats.layout import find_layout
from covidxr.data.splitting.splits import seeded_order
from covidxr.reporting.intervals import t_interval
from covidxr.reporting.paired import auroc_interval
from covidxr.run_folder import RunFolder
from covidxr.utils.env import machine_record, real_data_dir

#: The held-out images are picked with this seed, whatever the seeds of the runs.
HOLD_OUT_SEED = 20261207
#: The classes of covidxr's default task (data.classes).
CLASSES = ("COVID", "Normal")


def hold_out(root: Path, count: int, work: Path) -> tuple[Path, Path]:
    """Two folders of links in the class layout: ``count`` images (stratified, seeded) that only
    scoring sees, and the rest, which each side trains and selects on."""
    layout = find_layout(root)
    folders = {name: layout.classes[name] for name in CLASSES}
    total = sum(len(folder.files) for folder in folders.values())
    for name, folder in folders.items():
        paths = seeded_order([str(f) for f in folder.files], HOLD_OUT_SEED)
        kept = round(count * len(paths) / total)
        for part, chosen in (("held_out", paths[:kept]), ("dev", paths[kept:])):
            target = work / part / name / "images"
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                (target / Path(path).name).symlink_to(path)
    return work / "dev", work / "held_out"


def _timed(command: Sequence[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT, env=os.environ)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed (exit {done.returncode}): see {log}")
    return time.perf_counter() - start


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run_covidxr(
    dev: Path, held_out: Path, work: Path, seed: int, epochs: int, size: int,
    overrides: Sequence[str] = (),
) -> dict:  # fmt: skip
    """covidxr-train's defaults (plus ``overrides``: a candidate recipe) scored on ``held_out``."""
    run = work / f"covidxr-seed{seed}"
    seconds = _timed([_tool("covidxr-train"), "data=radiography", f"data.root={dev}",
                      f"data.image_size={size}", "trainer=cpu", f"trainer.max_epochs={epochs}",
                      f"seed={seed}", f"hydra.run.dir={run}", "callbacks.rich_progress_bar=null",
                      *overrides], work / f"covidxr-seed{seed}.log")  # fmt: skip
    scored = work / f"covidxr-eval-seed{seed}"
    _timed(
        [
            _tool("covidxr-eval"),
            f"ckpt_path={run}/checkpoints/best.ckpt",
            f"external={held_out}",
            f"hydra.run.dir={scored}",
        ],
        work / f"eval-seed{seed}.log",
    )
    metrics = json.loads((scored / "metrics.json").read_text())
    phases = json.loads(RunFolder(run).timings.read_text())
    return {"auroc": metrics["external/auroc"], "acc": metrics["external/acc"], "seconds": seconds,
            "phases": phases}  # fmt: skip


def run_loop(dev: Path, held_out: Path, work: Path, seed: int, epochs: int, size: int) -> dict:
    out = work / f"loop-seed{seed}.json"
    seconds = _timed([sys.executable, "-m", "covidxr.benchmarks.plain_loop", str(dev),
                      str(held_out), str(out), f"--epochs={epochs}", f"--image-size={size}",
                      f"--seed={seed}"], work / f"loop-seed{seed}.log")  # fmt: skip
    result = json.loads(out.read_text())
    scores, positive = np.asarray(result["scores"]), np.asarray(result["positive"], bool)
    auroc = auroc_interval(positive, scores)[0]
    return {"auroc": auroc, "acc": float(((scores >= 0.5) == positive).mean()), "seconds": seconds}


def earlier_loop(path: Path | None, epochs: int, size: int, held_out: int) -> dict[int, dict]:
    """The plain loop's rows of an earlier run of this benchmark at the same budget
    (``--loop-from``): trying a candidate recipe then costs covidxr's runs only."""
    if path is None:
        return {}
    try:
        earlier = json.loads(path.read_text())
        budget = (earlier["epochs"], earlier["image_size"], earlier["held_out"])
        rows = {int(r["seed"]): r["loop"] for r in earlier["rows"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"error: --loop-from {path}: not a recipe benchmark's JSON ({err})"
        raise SystemExit(problem) from None
    if budget != (epochs, size, held_out):
        raise SystemExit(f"error: --loop-from {path} ran {budget[0]} epochs at {budget[1]} px "
                         f"with {budget[2]} held out: give the same --epochs, --image-size "
                         "and --held-out")  # fmt: skip
    return rows


def time_breakdown(runs: Sequence[dict]) -> Table:
    """Where covidxr's wall time goes, mean over its runs: each phase of ``timings.json`` (nested
    ones indented) and what no phase covers (interpreter start, imports, Hydra, the trainer)."""
    seen = list(dict.fromkeys(name for run in runs for name in run["phases"]))
    outer = [name for name in seen if "/" not in name]
    names = [n for top in outer for n in (top, *(n for n in seen if n.startswith(f"{top}/")))]
    names += [name for name in seen if name not in names]  # nested in no recorded phase
    wall = float(np.mean([run["seconds"] for run in runs]))
    table = Table(title=f"Where covidxr's time goes (mean of {len(runs)} runs, {wall:.0f} s wall)")
    for column in ("phase", "s", "share"):
        table.add_column(column, justify="left" if column == "phase" else "right")

    def mean(name: str) -> float:
        return float(np.mean([run["phases"].get(name, 0.0) for run in runs]))

    outside = wall - sum(mean(name) for name in names if "/" not in name)
    for name in names:
        label = f"  {name.split('/', 1)[1]}" if "/" in name else name
        table.add_row(label, f"{mean(name):.1f}", f"{mean(name) / wall:.0%}")
    table.add_row("start-up, imports (no phase)", f"{outside:.1f}", f"{outside / wall:.0%}")
    return table


def bench_recipe(
    root: Path | None, seeds: Sequence[int], epochs: int, size: int, held_out: int,
    output: Path, console: Console, overrides: Sequence[str] = (), loop_from: Path | None = None,
) -> dict:  # fmt: skip
    root = root or real_data_dir()
    if root is None:
        raise SystemExit("error: give --root (the real X-rays; COVIDXR_REAL_DATA is not set)")
    reused = earlier_loop(loop_from, epochs, size, held_out)
    rows = []
    with tempfile.TemporaryDirectory(prefix="covidxr-recipe-") as tmp:
        work = Path(tmp)
        dev, scored = hold_out(Path(root), held_out, work)
        for seed in seeds:
            ours = run_covidxr(dev, scored, work, seed, epochs, size, overrides)
            loop = reused.get(seed) or run_loop(dev, scored, work, seed, epochs, size)
            rows.append({"seed": seed, "covidxr": ours, "loop": loop})
            console.print(f"seed {seed}: covidxr {ours}, loop {loop}", highlight=False)
    diff = [r["covidxr"]["auroc"] - r["loop"]["auroc"] for r in rows]
    mean, low, high = t_interval(diff)
    ratio = sum(r["covidxr"]["seconds"] for r in rows) / sum(r["loop"]["seconds"] for r in rows)
    summary = {"epochs": epochs, "image_size": size, "held_out": held_out, "rows": rows,
               "overrides": list(overrides), "machine": machine_record(),
               "auroc_difference": {"mean": mean, "ci_low": low, "ci_high": high},
               "time_ratio": ratio}  # fmt: skip
    table = Table(title=f"covidxr defaults against a plain loop ({epochs} epochs, {size} px, "
                  f"{held_out} held-out X-rays)")  # fmt: skip
    for column in ("seed", "covidxr AUROC", "loop AUROC", "covidxr acc", "loop acc",
                   "covidxr s", "loop s"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        c, p = r["covidxr"], r["loop"]
        table.add_row(
            str(r["seed"]),
            f"{c['auroc']:.3f}",
            f"{p['auroc']:.3f}",
            f"{c['acc']:.3f}",
            f"{p['acc']:.3f}",
            f"{c['seconds']:.0f}",
            f"{p['seconds']:.0f}",
        )
    console.print(table)
    interval = "" if math.isnan(low) else f" [{low:+.3f}, {high:+.3f}]"
    console.print(f"AUROC covidxr - loop: {mean:+.3f}{interval} (paired t over {len(rows)} seeds); "
                  f"wall time covidxr / loop: {ratio:.2f}x", highlight=False)  # fmt: skip
    console.print(time_breakdown([r["covidxr"] for r in rows]))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=1))
    return summary
