"""Decoding every kind of input file, and the errors for files that cannot be decoded."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_png

from covidxr.data.datamodule import RadiographyDataModule
from covidxr.data.decode import UnreadableImageError, read_gray, scan_unreadable
from covidxr.data.index import build_index


def test_8bit_grey_png_is_read_unchanged(tmp_path: Path) -> None:
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    np.testing.assert_array_equal(read_gray(tmp_path / "a.png"), image)


def test_16bit_png_is_scaled_to_8bit(tmp_path: Path) -> None:
    image = np.array([[0, 256, 65535, 32768]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    out = read_gray(tmp_path / "a.png")
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 255, 128]]


def test_rgb_and_rgba_become_grey(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., :] = (10, 100, 200)  # BGR on disk
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    rgba = np.dstack([rgb, np.full((8, 8), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "rgb.jpg"), rgb, [cv2.IMWRITE_JPEG_QUALITY, 100])
    expected = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
    for name in ("rgb.png", "rgba.png"):
        out = read_gray(tmp_path / name)
        assert out.shape == (8, 8)
        np.testing.assert_array_equal(out, expected)
    assert np.abs(read_gray(tmp_path / "rgb.jpg").astype(int) - expected).max() <= 2


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = write_png(tmp_path / "good.png", 3, size=64)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not an image\n")
    return {"truncated": truncated, "empty": empty, "text": text}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("truncated", "not a decodable"), ("empty", "empty"), ("text", "not a decodable")],
)
def test_unreadable_files_raise_naming_the_file(bad_files, kind: str, reason: str) -> None:
    with pytest.raises(UnreadableImageError, match=reason) as err:
        read_gray(bad_files[kind])
    assert err.value.path == str(bad_files[kind])
    assert str(bad_files[kind]) in str(err.value)
    assert "covidxr-data verify" in str(err.value)


def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match=r"nope\.png"):
        read_gray(tmp_path / "nope.png")


def test_scan_lists_exactly_the_bad_files(bad_files, tmp_path: Path) -> None:
    files = [tmp_path / "good.png", *bad_files.values()]
    found = dict(scan_unreadable(files, workers=2))
    assert set(found) == set(bad_files.values())


def _dataset_with_bad_file(root: Path) -> Path:
    for i in range(6):
        write_png(root / "COVID" / "images" / f"COVID-{i + 1}.png", i)
        write_png(root / "Normal" / "images" / f"Normal-{i + 1}.png", 50 + i)
    bad = root / "COVID" / "images" / "COVID-3.png"
    bad.write_bytes(bad.read_bytes()[:30])
    return bad


def test_skip_corrupt_drops_and_logs(tmp_path: Path, caplog) -> None:
    bad = _dataset_with_bad_file(tmp_path)
    with caplog.at_level(logging.WARNING):
        index = build_index(tmp_path, skip_corrupt=True)
    assert [path for path, _reason in index.dropped] == ["COVID/images/COVID-3.png"]
    assert all(s.path != "COVID/images/COVID-3.png" for v in index.splits.values() for s in v)
    assert sum(len(v) for v in index.splits.values()) == 11
    assert str(bad) in caplog.text


def test_without_skip_corrupt_the_loader_names_the_bad_file(tmp_path: Path) -> None:
    bad = _dataset_with_bad_file(tmp_path)
    dm = RadiographyDataModule(tmp_path, image_size=32, batch_size=4, split_fractions=(1, 0, 0))
    dm.setup("fit")
    with pytest.raises(UnreadableImageError, match=re.escape(str(bad))):
        for _ in dm.train_dataloader():
            pass
