"""Data as hospitals ship it: DICOM, 12/16-bit PNG, EXIF orientation, label manifests, patients
and sites kept on one side of a split, and no patient identifier in anything a run writes."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps
import pydicom
import pytest
from conftest import compose_config

from covidxr.cli.data import main as data_main
from covidxr.cli.train import train
from covidxr.data.formats.decode import UnreadableImageError, read_gray
from covidxr.data.formats.dicom import write_dicom
from covidxr.data.formats.manifest import read_manifest
from covidxr.data.phantoms.synthetic import generate_phantoms, phantom_patients
from covidxr.data.splitting.groups import group_secret, pseudonym
from covidxr.data.splitting.index import build_index
from covidxr.data.splitting.spec import SplitSpec
from covidxr.paths import CONF_DIR
from covidxr.utils.env import real_data_dir
from covidxr.utils.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def xray_root(phantoms: Path) -> Path:
    """The real dev set where it is present, else the suite's phantoms (same layout)."""
    return real_data_dir() or phantoms


@pytest.fixture(scope="module")
def source_png(xray_root: Path) -> Path:
    return sorted((xray_root / "COVID" / "images").glob("*.png"))[0]


def with_sbit(png: bytes, bits: int) -> bytes:
    """The PNG with an ``sBIT`` chunk declaring ``bits`` significant grey bits (after IHDR)."""
    end_of_ihdr = 8 + 8 + 13 + 4
    body = b"sBIT" + bytes([bits])
    chunk = struct.pack(">I", 1) + body + struct.pack(">I", zlib.crc32(body))
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def write_12bit_png(path: Path, gray: np.ndarray, convention: str = "scaled") -> Path:
    """12-bit data in a 16-bit PNG, as tools write it: ``scaled`` to 16 bits with ``sBIT`` 12
    (the PNG specification), ``raw`` values 0..4095 with ``sBIT`` 12, or ``raw`` values with no
    ``sBIT`` (``bare``: what most converters write)."""
    twelve = (gray.astype(np.uint16) << 4) | (gray.astype(np.uint16) >> 4)  # 0..4095
    samples = (twelve << 4) | (twelve >> 8) if convention == "scaled" else twelve
    ok, encoded = cv2.imencode(".png", samples)
    assert ok
    data = encoded.tobytes()
    path.write_bytes(data if convention == "bare" else with_sbit(data, 12))
    return path


LOSSLESS = {
    "mono2_8bit.dcm": {},
    "mono1_8bit.dcm": {"monochrome1": True},
    "12bit_rescaled_windowed.dcm": {"bits_stored": 12, "rescale": (0.5, -100.0)},
    "mono1_12bit_rescaled.dcm": {"bits_stored": 12, "monochrome1": True, "rescale": (2.0, -1024)},
    "rle.dcm": {"compress": "RLELossless"},
    "rle_12bit.dcm": {"bits_stored": 12, "compress": "RLELossless"},
    "jpeg2000_lossless.dcm": {"bits_stored": 12, "compress": "JPEG2000Lossless"},
    "1.2.826.0.1.3680043.8.498.1": {},  # named by its UID, no extension: found by content
}


@pytest.mark.parametrize("name", sorted(LOSSLESS))
def test_lossless_dicom_decodes_to_its_source_png(name: str, source_png: Path, tmp_path) -> None:
    gray = read_gray(source_png)
    path = tmp_path / name
    write_dicom(path, gray, attributes={"PatientID": "X"}, **LOSSLESS[name])
    decoded = read_gray(path)
    assert decoded.shape == gray.shape
    assert np.abs(decoded.astype(int) - gray).max() <= 1


def test_jpeg_compressed_dicom_decodes_close_to_its_source(source_png: Path, tmp_path) -> None:
    """JPEG Baseline (lossy): Pillow decodes it; within JPEG's own error of the source."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    gray = read_gray(source_png)
    path = tmp_path / "jpeg.dcm"
    write_dicom(path, gray)
    ds = pydicom.dcmread(path)
    buffer = io.BytesIO()
    PIL.Image.fromarray(gray).save(buffer, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path)
    assert np.abs(read_gray(path).astype(float) - gray).mean() < 2.0


def _refusable(kind: str, gray: np.ndarray, folder: Path) -> Path:
    path = folder / f"{kind}.dcm"
    write_dicom(path, gray)
    ds = pydicom.dcmread(path)
    if kind == "multi_frame":
        ds.NumberOfFrames = 2
        ds.PixelData = np.stack([gray, gray]).tobytes()
    elif kind == "no_pixel_data":
        del ds.PixelData
    elif kind == "colour":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.repeat(gray[..., None], 3, axis=2).tobytes()
    elif kind == "linear_exact_width_0":
        ds.VOILUTFunction, ds.WindowCenter, ds.WindowWidth = "LINEAR_EXACT", 128, 0
    elif kind == "bomb":  # a header declaring 20,000 x 20,000 pixels over a few kilobytes
        ds.Rows = ds.Columns = 20_000
    elif kind == "unsupported_syntax":
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
        ds["PixelData"].VR = "OB"
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\x00" * 64])
    ds.save_as(path)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("multi_frame", "multi-frame"),
        ("no_pixel_data", "no pixel data"),
        ("colour", "colour"),
        ("truncated", "truncated"),
        ("unsupported_syntax", "transfer syntax"),
        ("bomb", "20,000 x 20,000 pixels, over the limit"),
        ("linear_exact_width_0", "LINEAR_EXACT window width 0"),
    ],
)
def test_dicom_that_is_not_one_grey_xray_is_refused_naming_it(
    kind: str, reason: str, source_png: Path, tmp_path: Path
) -> None:
    path = _refusable(kind, read_gray(source_png), tmp_path)
    with pytest.raises(UnreadableImageError, match=reason) as err:
        read_gray(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_deeper_than_8_bits_is_read_by_its_bit_depth(
    source_png: Path, tmp_path, caplog, monkeypatch
) -> None:
    """Every convention of 12-bit data in 16-bit files reads as the 8-bit X-ray, never stretched
    by the image's own range (which changed the contrast of a dim image)."""
    from covidxr.data.formats import depth

    monkeypatch.setattr(depth, "_said", set())  # the guess is said once per process
    gray = read_gray(source_png)
    for convention in ("scaled", "raw", "bare"):
        decoded = read_gray(write_12bit_png(tmp_path / f"{convention}.png", gray, convention))
        assert np.abs(decoded.astype(int) - gray).max() <= 1, convention
    dim = np.array([[0, 1000, 2000, 3000]], np.uint16)  # 12-bit data, no sBIT, maximum < 4095
    cv2.imwrite(str(tmp_path / "no_sbit.png"), dim)
    with caplog.at_level("WARNING"):
        assert read_gray(tmp_path / "no_sbit.png").tolist() == [[0, 62, 125, 187]]  # not 255
    assert "read as 12-bit data" in caplog.text
    cv2.imwrite(str(tmp_path / "16bit.tif"), np.array([[0, 65535]], np.uint16))
    assert read_gray(tmp_path / "16bit.tif").tolist() == [[0, 255]]
    # A DICOM declaring 16 stored bits, holding 12-bit values, with no window: not near-black.
    twelve = tmp_path / "12_in_16.dcm"
    write_dicom(twelve, gray, bits_stored=12)
    ds = pydicom.dcmread(twelve)
    del ds.WindowCenter, ds.WindowWidth, ds.RescaleSlope, ds.RescaleIntercept
    ds.BitsStored, ds.HighBit = 16, 15
    ds.save_as(twelve)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert np.abs(read_gray(twelve).astype(int) - gray).max() <= 1
    assert "no DICOM window: read as 12-bit data" in caplog.text
    ds.PixelData = (np.asarray(gray, np.uint16) << 8).tobytes()  # the full 16 bits: as stored
    ds.save_as(twelve)
    assert np.abs(read_gray(twelve).astype(int) - gray).max() <= 1


def test_a_tiff_with_an_orientation_tag_is_turned_upright_once(tmp_path: Path) -> None:
    upright = np.zeros((20, 40), np.uint8)
    upright[:5, :10] = 255
    path = tmp_path / "turned.tif"
    PIL.Image.fromarray(np.rot90(upright, 1)).save(path, tiffinfo={0x0112: 6})
    assert np.array_equal(read_gray(path), upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(orientation)
    stored = cv2.GaussianBlur(rng.integers(0, 255, (48, 64), dtype=np.uint8), (0, 0), 3)
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    PIL.Image.fromarray(stored).save(path, exif=exif, quality=100)
    upright = np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(path)).convert("L"))
    decoded = read_gray(path)
    assert decoded.shape == upright.shape
    assert np.abs(decoded.astype(int) - upright).max() <= 2


def write_manifest(root: Path, rows: list[list[str]], name: str = "labels.csv") -> Path:
    path = root / name
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def invented_patients(root: Path, folder: Path, seed: int = 0) -> Path:
    """A manifest of every image under ``root`` with made-up patients of 2 to 4 X-rays each."""
    rng = np.random.default_rng(seed)
    rows = [["path", "label", "patient", "view"]]
    for label in ("COVID", "Normal"):
        files = sorted((root / label / "images").glob("*.png"))
        patient, left = 0, 0
        for file in files:
            if left == 0:
                patient, left = patient + 1, int(rng.integers(2, 5))
            rows.append([file.relative_to(root).as_posix(), label, f"{label}-{patient}", "PA"])
            left -= 1
    folder.mkdir(parents=True, exist_ok=True)
    return write_manifest(folder, rows)


def test_no_patient_straddles_splits_of_a_manifest(xray_root: Path, tmp_path: Path) -> None:
    manifest = invented_patients(xray_root, tmp_path)
    patient = {r["path"]: r["patient"] for r in csv.DictReader(manifest.open())}
    for seed in range(5):
        spec = SplitSpec(manifest=str(manifest), group_by="patient", seed=seed)
        index = build_index(xray_root, spec)
        splits_of = defaultdict(set)
        for split, samples in index.splits.items():
            for sample in samples:
                splits_of[patient[sample.path]].add(split)
                assert sample.group.startswith("patient:")
                assert patient[sample.path] not in sample.group
        assert all(len(s) == 1 for s in splits_of.values())
        assert all(index.splits[name] for name in ("train", "val", "test"))
    ungrouped = build_index(xray_root, SplitSpec(manifest=str(manifest), seed=0))
    splits_of = defaultdict(set)
    for split, samples in ungrouped.splits.items():
        for sample in samples:
            splits_of[patient[sample.path]].add(split)
    assert any(len(s) > 1 for s in splits_of.values())  # the leak grouping prevents


def test_manifest_classes_fixed_split_and_bad_manifests(phantoms: Path, tmp_path: Path) -> None:
    files = [p.relative_to(phantoms).as_posix() for p in sorted(phantoms.glob("*/images/*.png"))]
    rows = [["Path", "Label", "split"]]
    rows += [[f, f.split("/")[0], ("train", "val", "test")[i % 3]] for i, f in enumerate(files)]
    manifest = write_manifest(tmp_path, rows)
    spec = SplitSpec(manifest=str(manifest), classes=["Normal", "COVID"])
    index = build_index(phantoms, spec)
    assert index.classes == ("Normal", "COVID")
    assert {s.class_name for v in index.splits.values() for s in v} == {"Normal", "COVID"}
    for split, samples in index.splits.items():
        assert all(
            files.index(s.path) % 3 == ("train", "val", "test").index(split) for s in samples
        )
    bad = {
        "no_label": [["path", "class"], [files[0], "COVID"]],
        "missing_file": [["path", "label"], ["COVID/images/nope.png", "COVID"]],
        "twice": [["path", "label"], [files[0], "COVID"], [files[0], "COVID"]],
        "bad_split": [["path", "label", "split"], [files[0], "COVID", "holdout"]],
        "up_and_out": [["path", "label"], ["../outside.png", "COVID"]],
        "absolute_outside": [["path", "label"], [str(tmp_path / "x.png"), "COVID"]],
    }
    for name, bad_rows in bad.items():
        path = write_manifest(tmp_path, bad_rows, f"{name}.csv")
        with pytest.raises(DatasetError) as err:
            build_index(phantoms, SplitSpec(manifest=str(path)))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        if name in ("up_and_out", "absolute_outside"):  # both alike, even where the file exists
            assert "lies outside data.root" in str(err.value)
    inside = write_manifest(
        tmp_path, [["path", "label"], [str(phantoms / files[0]), "COVID"]], "inside.csv"
    )
    assert read_manifest(inside, phantoms).classes["COVID"].files == (phantoms / files[0],)
    unsplit = write_manifest(tmp_path, [row[:2] for row in rows], "unsplit.csv")
    with pytest.raises(ConfigError, match="not a column of the manifest"):
        build_index(phantoms, SplitSpec(manifest=str(unsplit), group_by="hospital"))
    with pytest.raises(ConfigError, match=r"needs data\.group_by"):
        SplitSpec(test_groups=["North"])


@pytest.fixture(scope="module")
def dicom_phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``covidxr-synth --dicom``: 12-bit DICOM phantoms of made-up patients and sites."""
    root = tmp_path_factory.mktemp("dicom") / "phantoms"
    return generate_phantoms(root, per_class=24, size=64, dicom=True)


def test_splits_by_dicom_header_keep_patients_and_hold_out_sites(dicom_phantoms: Path) -> None:
    patient, site = {}, {}
    for row in csv.DictReader((dicom_phantoms / "labels.csv").open()):
        patient[row["path"]], site[row["path"]] = row["patient"], row["site"]
    for seed in range(3):
        index = build_index(dicom_phantoms, SplitSpec(group_by="PatientID", seed=seed))
        splits_of = defaultdict(set)
        for split, samples in index.splits.items():
            for sample in samples:
                splits_of[patient[sample.path]].add(split)
        assert all(len(s) == 1 for s in splits_of.values())
    held = "South Valley Clinic"
    index = build_index(
        dicom_phantoms, SplitSpec(group_by="InstitutionName", test_groups=[held], dedup="group")
    )
    assert index.splits["test"] and {site[s.path] for s in index.splits["test"]} == {held}
    assert held not in {site[s.path] for s in index.splits["train"] + index.splits["val"]}


def test_the_split_by_patient_does_not_depend_on_the_pseudonym_key(
    dicom_phantoms: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of a dataset have different keys: same split, different recorded groups."""
    seen = []
    for key in ("one secret", "another secret"):
        monkeypatch.setenv("COVIDXR_GROUP_KEY", key)
        index = build_index(dicom_phantoms, SplitSpec(group_by="PatientID", seed=5))
        seen.append({s.path: (split, s.group) for split, v in index.splits.items() for s in v})
    assert {p: v[0] for p, v in seen[0].items()} == {p: v[0] for p, v in seen[1].items()}
    assert all(seen[0][p][1] != seen[1][p][1] for p in seen[0])


def test_audit_names_patients_on_both_sides_by_pseudonym(
    dicom_phantoms: Path, tmp_path: Path, capsys
) -> None:
    rows = list(csv.DictReader((dicom_phantoms / "labels.csv").open()))
    split_file = write_manifest(
        tmp_path,
        [["path", "label", "class", "split"]]
        + [
            [r["path"], str(int(r["label"] != "COVID")), r["label"], ("train", "test")[i % 2]]
            for i, r in enumerate(rows)
        ],
        "split.csv",
    )
    code = data_main(
        ["audit", str(dicom_phantoms), "--split-file", str(split_file), "--group-by", "PatientID"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "PatientID group(s) have images in several splits" in out
    assert not any(r["patient"] in out for r in rows)


def test_no_patient_identifier_leaves_the_data_folder(
    dicom_phantoms: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Train, test and report on DICOM split by PatientID with every logger, three patients held
    out (two by pseudonym, one in a file); then grep every file the run wrote for the planted
    identifiers, names and dates."""
    people = phantom_patients("COVID", 24, 0) + phantom_patients("Normal", 24, 0)
    ids = sorted({person["PatientID"] for person in people})
    secret = group_secret(dicom_phantoms)
    held_file = tmp_path / "held_out.txt"
    held_file.write_text(f"{ids[2]}\n")
    held = [pseudonym(ids[0], "PatientID", secret), pseudonym(ids[1], "PatientID", secret)]
    overrides = [
        "data=radiography",
        "augment=none",
        "trainer=cpu",
        "trainer.max_epochs=1",
        f"data.root={dicom_phantoms}",
        "data.group_by=PatientID",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "logger=many",
        f"data.test_groups=[{held[0]},{held[1]},@{held_file}]",
    ]
    run = tmp_path / "run"
    train(compose_config("train", overrides, run, data_dir))
    assert (run / "split.csv").is_file() and (run / "predictions_test.csv").is_file()
    patient_of = {
        r["path"]: r["patient"] for r in csv.DictReader((dicom_phantoms / "labels.csv").open())
    }
    split_rows = list(csv.DictReader((run / "split.csv").open()))
    assert {patient_of[r["path"]] for r in split_rows if r["split"] == "test"} == set(ids[:3])
    planted = {
        value
        for person in people
        for key, value in person.items()
        if key in ("PatientID", "PatientName")
    }
    planted |= {value.replace("^", " ") for value in planted}
    written = [p for p in run.rglob("*") if p.is_file()]
    assert len(written) > 10
    for path in written:
        content = path.read_bytes()
        found = [value for value in planted if value.encode() in content]
        assert not found, f"{path} holds {found}"
    groups = {r["group"] for r in csv.DictReader((run / "split.csv").open())}
    assert all(g.startswith("PatientID:") for g in groups)
    assert not (run / ".covidxr-key").exists() and (dicom_phantoms / ".covidxr-key").is_file()


def test_a_read_only_dataset_keeps_its_key_in_the_users_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from covidxr.data.splitting.groups import KEY_ENV, KEY_FILE, group_secret

    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    (shared / KEY_FILE).mkdir(parents=True)  # cannot be written as a file, as on a read-only share
    first = group_secret(shared)
    assert first and group_secret(shared) == first  # the same key next time
    assert list((tmp_path / "home" / ".cache" / "covidxr" / "group-keys").iterdir())
    assert "read-only" in caplog.text
    monkeypatch.setenv(KEY_ENV, "shared secret")
    assert group_secret(shared) == b"shared secret"


def test_synth_writes_dicom_patients_sites_and_a_manifest(tmp_path: Path, capsys) -> None:
    from covidxr.cli.synth import main as synth_main

    assert synth_main([str(tmp_path / "d"), "--dicom", "--per-class", "6", "--size", "32"]) == 0
    assert "DICOM phantoms" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "d" / "labels.csv").open()))
    assert len(rows) == 12 and all(r["path"].endswith(".dcm") for r in rows)
    for label in ("COVID", "Normal"):
        counts = list(Counter(r["patient"] for r in rows if r["label"] == label).values())
        assert all(2 <= n <= 4 for n in counts[:-1]) and counts[-1] <= 4  # the last: cut short
    first = pydicom.dcmread(tmp_path / "d" / rows[0]["path"])
    assert first.PatientID == rows[0]["patient"] and first.InstitutionName == rows[0]["site"]
    assert first.BitsStored == 12 and read_gray(tmp_path / "d" / rows[0]["path"]).dtype == np.uint8


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_an_8_bit_voi_lut_longer_than_256_entries_maps_every_value(
    vr: str, source_png: Path, tmp_path: Path
) -> None:
    """12-bit stored values through a 4,096-entry, 8-bit VOI LUT: the same grey as the PNG
    (pydicom 3.0.2's own apply_voi wraps the index at 256 and read 240 as 61)."""
    from pydicom.dataset import Dataset

    gray = read_gray(source_png)
    path = tmp_path / "voi.dcm"
    write_dicom(path, gray, bits_stored=12)  # stores gray << 4
    ds = pydicom.dcmread(path)
    del ds.WindowCenter, ds.WindowWidth
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    table = (np.arange(4096) >> 4).astype(np.uint16)  # back to the 8-bit grey
    lut.LUTData = table.tobytes() if vr == "OW" else table.tolist()
    lut["LUTData"].VR = vr
    ds.VOILUTSequence = [lut]
    ds.save_as(path)
    decoded = read_gray(path)
    assert decoded.max() == gray.max() > 200
    assert np.array_equal(decoded, gray)


@pytest.mark.parametrize("extra_installed", [True, False])
def test_an_undecodable_transfer_syntax_names_the_real_cause(
    extra_installed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Advice to install the DICOM extra only where it is missing; else the decoder's reason."""
    import importlib.util
    from types import SimpleNamespace

    from covidxr.data.formats import dicom

    class Undecodable:
        def __init__(self) -> None:
            syntax = SimpleNamespace(name="JPEG Extended (Process 2 and 4)")
            self.file_meta = {"TransferSyntaxUID": syntax}

        @property
        def pixel_array(self):
            raise RuntimeError("libjpeg: unsupported sample precision")

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if extra_installed else None) if name == "libjpeg" else found(name, *a)
        ),
    )
    with pytest.raises(dicom.DicomError) as err:
        dicom._pixels(Undecodable())
    assert "JPEG Extended" in str(err.value)
    assert ("unsupported sample precision" in str(err.value)) is extra_installed
    assert ("pip install" in str(err.value)) is not extra_installed


def test_raw_patient_ids_as_options_are_refused_before_anything_is_recorded() -> None:
    """Options are recorded everywhere: patient keys take pseudonyms or a file; sites as given."""
    from omegaconf import OmegaConf

    from covidxr.data.splitting.privacy import recorded_identifiers

    def config(group_by: str, given: list[str], overrides: list[str] = ()) -> str | None:
        return recorded_identifiers(
            OmegaConf.create(
                {
                    "data": {"group_by": group_by, "test_groups": given},
                    "hydra": {"overrides": {"task": list(overrides)}},
                }
            )
        )

    refused = config("PatientID", ["P-000123"])
    assert refused and "P-000123" not in refused and "PatientID:<16 hex digits>" in refused
    assert config("patient", [], ["data.test_groups=[ok],[P7]"])  # a sweep's values too
    assert config("PatientID", ["PatientID:0123456789abcdef", "@held.txt"]) is None
    assert config("InstitutionName", ["South Valley Clinic"]) is None
    hydra = OmegaConf.load(CONF_DIR / "hydra" / "default.yaml")
    targets = [c["_target_"] for c in hydra.callbacks.values()]
    assert targets[0] == "covidxr.data.splitting.privacy.NoRecordedIdentifiers"
