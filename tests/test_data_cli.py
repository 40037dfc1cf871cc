"""``covidxr-synth``, ``covidxr-data`` and ``covidxr-bench data`` as a user calls them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from covidxr.cli import bench
from covidxr.cli import data as data_cli
from covidxr.cli import synth as synth_cli
from covidxr.data.formats.decode import read_gray
from covidxr.data.formats.layout import find_layout


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.png")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_synth_writes_the_current_layout_deterministically(tmp_path: Path, capsys) -> None:
    args = ["--per-class", "3", "--classes", "COVID", "Normal", "Lung_Opacity", "--size", "48"]
    assert synth_cli.main([str(tmp_path / "a"), *args, "--seed", "1"]) == 0
    assert "Wrote 9 phantoms" in capsys.readouterr().out
    synth_cli.main([str(tmp_path / "b"), *args, "--seed", "1"])
    synth_cli.main([str(tmp_path / "c"), *args, "--seed", "2"])
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    layout = find_layout(tmp_path / "a")
    assert layout.layout == "current"
    assert layout.counts() == {"COVID": 3, "Lung_Opacity": 3, "Normal": 3}
    assert read_gray(tmp_path / "a" / "COVID" / "images" / "COVID-3.png").shape == (48, 48)


def test_synth_rejects_unknown_class(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        synth_cli.main([str(tmp_path), "--classes", "COVID", "Cats"])


def test_phantom_classes_differ_in_the_lungs(phantoms: Path) -> None:
    """COVID phantoms carry extra lower-zone density over Normal ones, on average."""

    def lower_lungs(name: str) -> float:
        images = [read_gray(p) for p in sorted((phantoms / name / "images").glob("*.png"))]
        return float(
            np.mean([img[32:52, 6:26].mean() + img[32:52, 38:58].mean() for img in images])
        )

    assert lower_lungs("COVID") > lower_lungs("Normal")


def test_data_summary_prints_layout_and_counts(phantoms: Path, capsys) -> None:
    assert data_cli.main(["summary", str(phantoms.parent)]) == 0
    out = capsys.readouterr().out
    assert "current" in out and "COVID/images" in out and "Viral Pneumonia" in out
    assert "96" in out  # total


def test_data_verify_lists_unreadable_files(tmp_path: Path, capsys) -> None:
    for i in range(3):
        write_png(tmp_path / "COVID" / f"COVID-{i}.png", i)
        write_png(tmp_path / "Normal" / f"Normal-{i}.png", i)
    assert data_cli.main(["verify", str(tmp_path)]) == 0
    assert "6 of 6 images decode" in capsys.readouterr().out
    (tmp_path / "Normal" / "Normal-1.png").write_bytes(b"")
    (tmp_path / "COVID" / "COVID-2.png").write_text("text")
    assert data_cli.main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "Normal-1.png" in out and "empty" in out and "COVID-2.png" in out
    assert "4 of 6 images decode" in out


def test_data_cli_missing_root_exits_2(tmp_path: Path, capsys) -> None:
    assert data_cli.main(["summary", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_bench_data_prints_every_row(phantoms: Path, capsys) -> None:
    import torch

    threads = torch.get_num_threads()
    bench.main(["data", "--root", str(phantoms), "--images", "40", "--image-size", "32"])
    out = capsys.readouterr().out
    for row in ("covidxr loader", "default aug", "CPU normalise", "ImageFolder + PIL", "ratio"):
        assert row in out
    # CPU results depend on the thread count: a benchmark must not change it for what follows
    assert torch.get_num_threads() == threads


def test_bench_pretrain_races_covidxr_against_the_plain_lightly_loop(capsys) -> None:
    args = ["--image-size", "32", "--batch-size", "4", "--steps", "1", "--rounds", "1"]
    assert bench.main(["pretrain", *args]) == 0
    out = capsys.readouterr().out
    for row in ("plain lightly + PyTorch loop", "covidxr-pretrain module", "ratio covidxr / plain"):
        assert row in out


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--images", "0"],
        ["predict", "--workers", "-1"],
        ["train", "--steps", "x"],
        ["pretrain", "--batch-size", "1"],  # MoCo's loss needs another image in the batch
    ],
)
def test_bench_options_out_of_range_are_one_line_and_exit_2(argv: list[str], capsys) -> None:
    from covidxr.cli.bench import main as bench_main

    with pytest.raises(SystemExit) as exit_info:
        bench_main(argv)
    assert exit_info.value.code == 2
    assert "give an integer >=" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_recipe_benchmark_holds_out_a_stratified_seeded_part(
    phantoms: Path, tmp_path: Path
) -> None:
    """What neither side trains or selects on: per class in proportion, the same images on
    every call, disjoint from what they train on."""
    from covidxr.benchmarks.recipe import hold_out

    dev, held = hold_out(phantoms, 10, tmp_path / "a")
    again = hold_out(phantoms, 10, tmp_path / "b")[1]
    names = {
        c: sorted(p.name for p in (held / c / "images").iterdir()) for c in ("COVID", "Normal")
    }
    assert {c: len(v) for c, v in names.items()} == {"COVID": 5, "Normal": 5}
    assert names["COVID"] == sorted(p.name for p in (again / "COVID" / "images").iterdir())
    trained = {p.name for p in (dev / "COVID" / "images").iterdir()}
    assert not trained & set(names["COVID"])
    assert len(trained) + 5 == len(list((phantoms / "COVID" / "images").iterdir()))


def test_the_time_breakdown_lists_each_phase_above_what_it_contains() -> None:
    from covidxr.benchmarks.recipe import time_breakdown

    phases = {"index/pHash": 1.0, "index": 2.0, "fit/epoch 1": 3.0, "fit": 4.0, "x/y": 0.5}
    table = time_breakdown([{"seconds": 10.0, "phases": phases}])
    labels = list(table.columns[0].cells)
    assert labels == ["index", "  pHash", "fit", "  epoch 1", "  y", "start-up, imports (no phase)"]
    assert list(table.columns[1].cells)[-1] == "4.0"  # 10 s less index and fit


@pytest.mark.slow
def test_the_recipe_benchmark_compares_both_on_the_held_out_images(
    phantoms: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "recipe.json"
    args = ["recipe", "--root", str(phantoms), "--seeds", "1", "--epochs", "1"]
    assert bench.main([*args, "--image-size", "32", "--held-out", "10", "--output", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert {"auroc", "acc", "seconds"} <= set(row["loop"]) < set(row["covidxr"])
    assert {"index", "fit", "fit/epoch 1", "test", "report"} <= set(row["covidxr"]["phases"])
    out = capsys.readouterr().out
    assert result["time_ratio"] > 0 and "wall time covidxr / loop" in out
    assert "Where covidxr's time goes" in out and "start-up, imports (no phase)" in out
