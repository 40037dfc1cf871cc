"""Decoding every kind of input file, and the errors for files that cannot be decoded."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_png
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from covidxr.data.formats.decode import UnreadableImageError, read_gray, scan_unreadable
from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.data.splitting.index import build_index
from covidxr.data.splitting.spec import SplitSpec
from covidxr.utils.errors import DatasetError, find_user_error, user_message


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
        index = build_index(tmp_path, SplitSpec(skip_corrupt=True))
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


def test_verify_names_every_unreadable_file_of_every_split_up_front(tmp_path: Path) -> None:
    bad = _dataset_with_bad_file(tmp_path)
    other = tmp_path / "Normal" / "images" / "Normal-2.png"
    other.write_bytes(b"")
    dm = RadiographyDataModule(tmp_path, image_size=32, verify=True)
    with pytest.raises(DatasetError) as err:
        dm.setup("fit")  # before any loader: val and test images are checked too
    message = str(err.value)
    assert "2 unreadable" in message and "COVID/images/COVID-3.png" in message
    assert "Normal/images/Normal-2.png" in message and "data.skip_corrupt=true" in message
    assert bad.is_file()  # nothing is deleted


def test_skip_corrupt_records_the_dropped_files_in_the_run_folder(tmp_path: Path) -> None:
    _dataset_with_bad_file(tmp_path / "data")
    run = tmp_path / "run"
    dm = RadiographyDataModule(tmp_path / "data", image_size=32, skip_corrupt=True, output_dir=run)
    dm.setup("fit")
    rows = (run / "unreadable_images.csv").read_text().splitlines()
    assert rows[0] == "path,reason" and rows[1].startswith("COVID/images/COVID-3.png,")
    # A saved split keeps its assignments; the unreadable file is left out of it too.
    reused = build_index(
        tmp_path / "data", SplitSpec(split_file=run / "split.csv", skip_corrupt=True)
    )
    assert sum(len(v) for v in reused.splits.values()) == 11


@pytest.mark.parametrize(
    ("side", "message"), [(12_000, "12,000 x 12,000 pixels"), (20_000, "too many pixels")]
)
def test_decompression_bomb_is_refused_before_decoding(
    side: int, message: str, tmp_path: Path
) -> None:
    """A tiny PNG whose header claims side x side pixels (144 or 400 MB once decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 16)  # a few rows: the rest would be generated
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
    with pytest.raises(UnreadableImageError, match=f"{message}.* over the limit of 100,000,000"):
        read_gray(bomb)


VALID = {}


def _valid_bytes(kind: str) -> bytes:
    if kind not in VALID:
        image = (np.arange(48 * 40) % 251).astype(np.uint8).reshape(48, 40)
        ok, encoded = cv2.imencode(f".{kind}", image)
        assert ok
        VALID[kind] = encoded.tobytes()
    return VALID[kind]


@st.composite
def hostile_bytes(draw) -> bytes:
    """Random bytes, or a valid PNG/JPEG with bytes flipped, cut off, or inserted."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(_valid_bytes(draw(st.sampled_from(["png", "jpg"]))))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
            if not data:
                break
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bytes())
def test_hostile_bytes_give_an_image_or_our_own_error(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(data)
    try:
        image = read_gray(path)
    except UnreadableImageError as exc:
        assert str(path) in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise UnreadableImageError("COVID/images/broken.png", "truncated PNG")


def test_an_unreadable_image_in_a_loader_worker_is_still_one_line() -> None:
    """data.verify=false: the error reaches the main process through a worker's traceback."""
    loader = torch.utils.data.DataLoader(_Unreadable(), num_workers=1)
    with pytest.raises(UnreadableImageError) as err:
        next(iter(loader))
    assert "Original Traceback" in str(err.value)
    line = user_message(find_user_error(err.value))
    assert line.startswith("Cannot read image COVID/images/broken.png: truncated PNG.")
    assert "\n" not in line
