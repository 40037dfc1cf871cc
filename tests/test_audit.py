"""Near-duplicate audit and leakage-proof splits: planted copies are all found, none invented,
and a dedup split never puts a copy of a test image in training."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import pytest

from covidxr.cli import data as data_cli
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.data.splitting.audit import audit
from covidxr.data.splitting.index import build_index
from covidxr.data.splitting.spec import SplitSpec


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[frozenset[str]]]:
    """COVID/Normal phantoms with 6 planted copies: 4 exact, 2 re-scaled and re-encoded."""
    root = generate_phantoms(
        tmp_path_factory.mktemp("planted") / "data",
        per_class=30,
        classes=("COVID", "Normal"),
        size=64,
    )
    copies = set()
    for k, (cls, n) in enumerate([("COVID", 1), ("COVID", 2), ("Normal", 3), ("Normal", 4)]):
        source = root / cls / "images" / f"{cls}-{n}.png"
        target = source.with_name(f"{cls}-{100 + k}.png")
        shutil.copy(source, target)
        copies.add(frozenset({str(source), str(target)}))
    for k, (cls, n) in enumerate([("COVID", 5), ("Normal", 6)]):
        source = root / cls / "images" / f"{cls}-{n}.png"
        target = source.with_name(f"{cls}-{200 + k}.png")
        image = cv2.resize(cv2.imread(str(source), cv2.IMREAD_GRAYSCALE), (80, 80))
        cv2.imwrite(str(target), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        copies.add(frozenset({str(source), str(target)}))
    return root, copies


def test_audit_finds_every_planted_copy_and_invents_none(planted) -> None:
    root, copies = planted
    result = audit(root)
    assert {frozenset({a, b}) for a, b, _ in result.within} == copies
    assert result.images == 66


def test_a_random_split_leaks_and_a_dedup_split_does_not(planted, tmp_path: Path, capsys) -> None:
    root, copies = planted
    leaky = build_index(root, SplitSpec(split_fractions=(0.5, 0.2, 0.3), seed=1, dedup="off"))
    leaky.write_split_csv(tmp_path / "leaky.csv")
    assert data_cli.main(["audit", str(root), "--split-file", str(tmp_path / "leaky.csv")]) == 1
    assert "straddle the splits" in capsys.readouterr().out
    for seed in range(3):
        index = build_index(
            root, SplitSpec(split_fractions=(0.5, 0.2, 0.3), seed=seed, dedup="group")
        )
        split_of = {s.path: name for name, group in index.splits.items() for s in group}
        for pair in copies:
            a, b = (Path(p).relative_to(root).as_posix() for p in pair)
            assert split_of[a] == split_of[b]
        index.write_split_csv(tmp_path / "split.csv")
        rows = list(csv.DictReader((tmp_path / "split.csv").open()))
        assert {r["group"] for r in rows if r["path"].endswith("-100.png")} == {
            "COVID/images/COVID-1.png"
        }
        assert data_cli.main(["audit", str(root), "--split-file", str(tmp_path / "split.csv")]) == 0
    dropped = build_index(root, SplitSpec(dedup="drop"))
    assert sum(len(v) for v in dropped.splits.values()) == 66 - len(copies)


def test_audit_cli_writes_pairs_and_a_contact_sheet(planted, tmp_path: Path, capsys) -> None:
    root, copies = planted
    other = tmp_path / "other"
    (other / "COVID").mkdir(parents=True)
    shutil.copy(root / "COVID" / "images" / "COVID-7.png", other / "COVID" / "x.png")
    args = ["audit", str(root), "--against", str(other), "--output", str(tmp_path / "pairs.csv")]
    assert data_cli.main([*args, "--sheet", str(tmp_path / "sheet.png")]) == 0
    rows = list(csv.DictReader((tmp_path / "pairs.csv").open()))
    assert len(rows) == len(copies) + 1 and rows[0].keys() == {"path_a", "path_b", "distance"}
    assert any(r["path_b"].endswith("x.png") for r in rows)
    assert (tmp_path / "sheet.png").stat().st_size > 10_000
    assert "against" in capsys.readouterr().out


def test_dedup_split_of_the_real_dev_set_has_no_leak(real_data: Path, tmp_path: Path) -> None:
    index = build_index(real_data, SplitSpec(dedup="group", dedup_threshold=2))
    index.write_split_csv(tmp_path / "split.csv")
    result = audit(real_data, split_file=tmp_path / "split.csv", threshold=2)
    assert len(result.within) >= 6  # the dev set holds exact copies (distance 0)
    assert result.leaks == []


def test_audit_and_verify_name_what_they_could_not_check(tmp_path: Path, capsys) -> None:
    """A split file of another dataset, unreadable files, a broken link and one X-ray filed
    under two classes: each is named, none passes as "0 pairs" or "OK"."""
    root = generate_phantoms(tmp_path / "data", per_class=8, classes=("COVID", "Normal"), size=64)
    images = root / "COVID" / "images"
    (images / "COVID-50.png").write_bytes((images / "COVID-1.png").read_bytes()[:40])
    (images / "COVID-51.png").symlink_to(images / "gone.png")
    shutil.copy(root / "Normal" / "images" / "Normal-2.png", images / "COVID-52.png")
    result = audit(root)
    assert [Path(p).name for p, _ in result.unreadable] == ["COVID-50.png", "COVID-51.png"]
    assert {frozenset(Path(p).name for p in pair[:2]) for pair in result.conflicts} == {
        frozenset({"COVID-52.png", "Normal-2.png"})
    }
    assert data_cli.main(["audit", str(root)]) == 2
    out = capsys.readouterr().out
    assert "label conflict" in out and "COVID-50.png" in out and "COVID-51.png" in out
    assert data_cli.main(["verify", str(root)]) == 1
    assert "COVID-51.png" in capsys.readouterr().out  # the broken link is not dropped
    other = tmp_path / "other_split.csv"
    other.write_text("path,label,class,split\nelsewhere/x.png,0,COVID,test\n")
    assert data_cli.main(["audit", str(root), "--split-file", str(other)]) == 2
    assert "not images of" in capsys.readouterr().err


def test_a_damaged_hash_cache_is_rebuilt(tmp_path: Path) -> None:
    root = generate_phantoms(tmp_path / "data", per_class=4, classes=("COVID", "Normal"), size=64)
    first = audit(root)
    (root / ".covidxr-phash.json").write_text('{"version": 1, "hashes": {"COVID/ima')
    assert audit(root).images == first.images == 8
