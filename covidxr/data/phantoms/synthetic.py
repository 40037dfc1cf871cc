"""Synthetic chest X-ray phantoms: the offline stand-in for the real database.

Each phantom is drawn from a seeded generator: body outline, two lung fields, ribs, spine, heart,
vessel markings, noise, and per-image variation of anatomy, pose and exposure. The classes differ
the way the radiology literature describes them, and only faintly in some images, so a model has
something real to learn without the task being trivial:

* COVID: bilateral, peripheral, lower-zone ground-glass opacities;
* Lung_Opacity: one or two dense, focal consolidations, often on one side;
* Viral Pneumonia: bilateral perihilar interstitial (streaky, reticular) markings;
* Normal: none of these.

The files are written in the database's current layout (``<Class>/images/<Class>-N.png``), so every
code path that reads the real data reads these too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from covidxr.data.formats.classes import KNOWN_CLASSES, resolve_classes
from covidxr.data.formats.dicom import write_dicom
from covidxr.data.formats.sources import write_metadata
from covidxr.utils.errors import DatasetError

log = logging.getLogger(__name__)
MANIFEST = "phantoms.json"
#: Bumped whenever the drawing changes, so cached phantoms of an older generator are not reused.
GENERATOR_VERSION = 3  # 3: lung masks in <Class>/masks/, optional shortcut marker


class _Canvas:
    """Float image with helpers for soft shapes; coordinates are fractions of the side."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.image = np.zeros((size, size), np.float32)
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x, self.y = np.meshgrid(grid, grid)

    def ellipse_mask(self, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
        d = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
        return np.clip((1.0 - d) / soft, 0.0, 1.0)

    def blob(self, cx: float, cy: float, sigma: float) -> np.ndarray:
        return np.exp(-((self.x - cx) ** 2 + (self.y - cy) ** 2) / (2 * sigma**2))

    def px(self, v: float) -> int:
        return round(v * self.size)


def _lungs(c: _Canvas, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Draw body, lungs, heart, spine and ribs; return both lung masks and the anatomy used."""
    a = {
        "cy": 0.45 + rng.normal(0, 0.02),
        "gap": 0.065 + rng.normal(0, 0.008),
        "rx": 0.19 * rng.uniform(0.9, 1.08),
        "ry": 0.33 * rng.uniform(0.9, 1.08),
    }
    body = c.ellipse_mask(0.5, 0.62, 0.6 * rng.uniform(0.9, 1.05), 0.72, 0.1)
    c.image += 0.5 * body + 0.05
    right = c.ellipse_mask(0.5 - a["gap"] - a["rx"], a["cy"], a["rx"], a["ry"], 0.15)
    left = c.ellipse_mask(0.5 + a["gap"] + a["rx"], a["cy"], a["rx"], a["ry"], 0.15)
    c.image -= 0.3 * (right + left)
    mediastinum = np.clip(1 - np.abs(c.x - 0.5) / 0.07, 0, 1) ** 0.5
    c.image += 0.12 * mediastinum
    heart = c.ellipse_mask(0.55 + rng.normal(0, 0.015), a["cy"] + 0.2, 0.17, 0.13, 0.5)
    c.image += 0.22 * heart * rng.uniform(0.8, 1.2)
    ribs = np.zeros_like(c.image)
    thickness = max(1, c.px(0.012))
    for side in (-1, 1):
        cx = 0.5 + side * (a["gap"] + a["rx"])
        for k in range(9):
            y = a["cy"] - a["ry"] + 0.03 + k * 0.062 + rng.normal(0, 0.004)
            center = (c.px(cx - side * 0.05), c.px(y - 0.06))
            axes = (c.px(a["rx"] * 1.15), c.px(0.09))
            angle = 15 if side > 0 else 165
            cv2.ellipse(ribs, center, axes, angle, 190, 350, 1.0, thickness, cv2.LINE_AA)
    ribs = cv2.GaussianBlur(ribs, (0, 0), max(0.6, c.size / 300))
    c.image += 0.09 * ribs * np.clip(right + left + body * 0.3, 0, 1)
    return right, left, a


def _vessels(c: _Canvas, rng: np.random.Generator, a: dict, n: int, strength: float) -> None:
    """Branching markings from each hilum towards the lung periphery."""
    lines = np.zeros_like(c.image)
    for side in (-1, 1):
        hx, hy = 0.5 + side * (a["gap"] + 0.03), a["cy"] + 0.02
        for _ in range(n):
            ang = rng.uniform(-1.2, 1.2) + (0 if side > 0 else math.pi)
            length = rng.uniform(0.06, 0.16)
            end = (hx + length * math.cos(ang), hy + length * math.sin(ang) * 1.3)
            cv2.line(lines, (c.px(hx), c.px(hy)), (c.px(end[0]), c.px(end[1])), 1.0, 1, cv2.LINE_AA)
    c.image += strength * cv2.GaussianBlur(lines, (0, 0), max(0.5, c.size / 400))


def _covid(c: _Canvas, rng: np.random.Generator, lungs: tuple, a: dict, strength: float) -> None:
    for side, mask in zip((-1, 1), lungs, strict=True):
        for _ in range(rng.integers(2, 5)):
            x = 0.5 + side * (a["gap"] + a["rx"] * rng.uniform(1.3, 1.85))
            y = a["cy"] + a["ry"] * rng.uniform(0.1, 0.75)
            c.image += (
                strength * rng.uniform(0.6, 1.0) * c.blob(x, y, rng.uniform(0.035, 0.07)) * mask
            )


def _lung_opacity(c: _Canvas, rng: np.random.Generator, lungs: tuple, a: dict, strength: float):
    sides = [int(rng.integers(0, 2))] if rng.random() < 0.7 else [0, 1]
    for i in sides:
        side = (-1, 1)[i]
        x = 0.5 + side * (a["gap"] + a["rx"] * rng.uniform(0.6, 1.5))
        y = a["cy"] + a["ry"] * rng.uniform(-0.6, 0.5)
        blob = np.clip(c.blob(x, y, rng.uniform(0.03, 0.05)) * 1.6, 0, 1)
        c.image += 1.8 * strength * blob * lungs[i]


def _viral(c: _Canvas, rng: np.random.Generator, lungs: tuple, a: dict, strength: float) -> None:
    streaks = np.zeros_like(c.image)
    for _ in range(60):
        side = rng.choice((-1, 1))
        x = 0.5 + side * (a["gap"] + a["rx"] * abs(rng.normal(0.5, 0.35)))
        y = a["cy"] + rng.normal(0.0, a["ry"] * 0.45)
        ang, ln = rng.uniform(0, math.pi), rng.uniform(0.015, 0.04)
        p0 = (c.px(x - ln * math.cos(ang)), c.px(y - ln * math.sin(ang)))
        p1 = (c.px(x + ln * math.cos(ang)), c.px(y + ln * math.sin(ang)))
        cv2.line(streaks, p0, p1, 1.0, 1, cv2.LINE_AA)
    streaks = cv2.GaussianBlur(streaks, (0, 0), max(0.5, c.size / 350))
    haze = c.blob(0.5 - a["gap"] - 0.06, a["cy"], 0.09) + c.blob(
        0.5 + a["gap"] + 0.06, a["cy"], 0.09
    )
    c.image += strength * (0.9 * streaks + 0.5 * haze) * (lungs[0] + lungs[1])


_PATTERNS = {"COVID": _covid, "Lung_Opacity": _lung_opacity, "Viral Pneumonia": _viral}


def render_phantom(
    class_name: str, size: int, rng: np.random.Generator, shortcut: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom of ``class_name``: the HxW uint8 image and its lung mask (255 inside).

    ``shortcut``: COVID images get a bright square burned into the top-left border, the kind of
    marker (a hospital's label, a device's tag) a model can learn instead of the lungs.
    """
    c = _Canvas(size)
    right, left, anatomy = _lungs(c, rng)
    _vessels(c, rng, anatomy, n=int(rng.integers(4, 9)), strength=0.05)
    pattern = _PATTERNS.get(class_name)
    if pattern is not None:
        pattern(c, rng, (right, left), anatomy, strength=float(rng.uniform(0.07, 0.2)))
    image = c.image
    angle, shift = rng.normal(0, 3), rng.normal(0, 0.02, size=2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, rng.uniform(0.95, 1.08))
    m[:, 2] += shift
    image = cv2.warpAffine(image, m, (size, size), borderMode=cv2.BORDER_REPLICATE)
    lungs = cv2.warpAffine(np.clip(right + left, 0, 1), m, (size, size))
    mask = np.where(lungs > 0.5, 255, 0).astype(np.uint8)
    gamma = rng.uniform(0.8, 1.25)
    image = np.clip(image, 0, 1) ** gamma * rng.uniform(0.85, 1.1) + rng.uniform(-0.04, 0.06)
    image += rng.normal(0, rng.uniform(0.01, 0.03), image.shape).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0) * size / 224)
    pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if shortcut and class_name == "COVID":
        start, side = round(0.03 * size), max(2, round(0.12 * size))
        pixels[start : start + side, start : start + side] = 255
    return pixels, mask


#: Made-up hospitals the DICOM phantoms come from (``InstitutionName``).
SITES = ("North General Hospital", "South Valley Clinic", "East Medical Center")
MANIFEST_CSV = "labels.csv"


def _write_one(args: tuple[Path, str, int, int, int, int, bool, dict | None]) -> None:
    out, name, class_index, index, size, seed, shortcut, patient = args
    rng = np.random.default_rng([seed, class_index, index])
    image, mask = render_phantom(name, size, rng, shortcut)
    path = out / name / "masks" / f"{name}-{index + 1}.png"
    if not cv2.imwrite(str(path), mask):
        raise OSError(f"could not write {path}")
    path = out / name / "images" / f"{name}-{index + 1}.{'dcm' if patient else 'png'}"
    if patient:  # 12 bits stored in 16, with the window that maps them back
        write_dicom(path, image, bits_stored=12, attributes=patient)
    elif not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def phantom_patients(name: str, per_class: int, seed: int) -> list[dict[str, str]]:
    """Made-up DICOM patients for one class's phantoms: 2 to 4 X-rays each, at one of ``SITES``
    (identifiers and dates for privacy tests to look for)."""
    class_index = KNOWN_CLASSES.index(name)
    rng = np.random.default_rng([seed, class_index, 7])
    patients: list[dict[str, str]] = []
    number = 0
    while len(patients) < per_class:
        number += 1
        person = {
            "PatientID": f"PID{seed:02d}{class_index}{number:04d}",
            "PatientName": f"Phantom^{name.split()[0]}{number}",
            "PatientBirthDate": f"19{40 + number % 50:02d}0{1 + number % 9}15",
            "InstitutionName": SITES[int(rng.integers(len(SITES)))],
            "StudyDate": "2020041" + str(number % 10),
        }
        patients += [person] * int(rng.integers(2, 5))
    return patients[:per_class]


def generate_phantoms(
    out: str | os.PathLike,
    per_class: int = 100,
    classes: Sequence[str] = ("COVID", "Normal"),
    size: int = 224,
    seed: int = 0,
    workers: int | None = None,
    shortcut: bool = False,
    dicom: bool = False,
) -> Path:
    """Write ``per_class`` phantoms per class under ``out`` in the current Kaggle layout, with
    their lung masks in ``<Class>/masks/`` (``shortcut``: see ``render_phantom``).

    ``dicom`` writes the images as 12-bit DICOM of made-up patients (2 to 4 X-rays each) at
    made-up sites, and a ``labels.csv`` manifest (path, label, patient, site) beside them.

    Each image has its own generator seeded by (seed, class, index), so a file's content does not
    depend on how many images or classes are generated beside it.
    """
    out = Path(out)
    names = resolve_classes(classes)
    jobs = []
    for name in names:
        for folder in ("images", "masks"):
            (out / name / folder).mkdir(parents=True, exist_ok=True)
        index = KNOWN_CLASSES.index(name)
        patients = phantom_patients(name, per_class, seed) if dicom else [None] * per_class
        jobs += [(out, name, index, i, size, seed, shortcut, patients[i]) for i in range(per_class)]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_one, jobs))
    suffix = "dcm" if dicom else "png"
    for name in names:  # two made-up source collections per class, as the release's metadata
        files = [out / name / "images" / f"{name}-{i + 1}.{suffix}" for i in range(per_class)]
        urls = [f"https://example.org/{name.lower()}-collection-{i % 2}/" for i in range(per_class)]
        write_metadata(out, name, files, urls)
    if dicom:
        _write_label_manifest(out, names, per_class, seed)
    manifest = _manifest(per_class, names, size, seed, shortcut)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _write_label_manifest(out: Path, names: Sequence[str], per_class: int, seed: int) -> None:
    with (out / MANIFEST_CSV).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "patient", "site"])
        for name in names:
            for i, person in enumerate(phantom_patients(name, per_class, seed)):
                path = f"{name}/images/{name}-{i + 1}.dcm"
                writer.writerow([path, name, person["PatientID"], person["InstitutionName"]])


def _manifest(
    per_class: int, classes: Sequence[str], size: int, seed: int, shortcut: bool = False
) -> dict:
    """What identifies a set of phantoms: same manifest, same files."""
    return {
        "shortcut": shortcut,
        "generator": GENERATOR_VERSION,
        "per_class": per_class,
        "classes": list(resolve_classes(classes)),
        "size": size,
        "seed": seed,
    }


def ensure_phantoms(
    out: str | os.PathLike,
    per_class: int = 100,
    classes: Sequence[str] = ("COVID", "Normal"),
    size: int = 224,
    seed: int = 0,
    shortcut: bool = False,
) -> Path:
    """Generate phantoms unless ``out`` already holds exactly this set (a cache across runs).

    A folder of phantoms made with other settings (or an older generator) is replaced; a
    non-empty folder without our manifest is someone's data and is never touched.
    """
    out = Path(out)
    wanted = _manifest(per_class, classes, size, seed, shortcut)
    manifest = out / MANIFEST
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            return out
        log.warning("Regenerating phantoms in %s: it holds %s, not %s", out, found, wanted)
    elif out.exists() and any(out.iterdir()):
        raise DatasetError(
            f"{out} is not empty and has no {MANIFEST}: refusing to write phantoms over it. "
            "To train on a real dataset there, use data=radiography data.root=<it>; for "
            "phantoms, choose an empty folder."
        )
    # Write beside the target and swap, so an interrupted run never leaves half a dataset.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    retired = out.parent / f".{out.name}.old.{os.getpid()}"
    try:
        generate_phantoms(staging, per_class, classes, size, seed, shortcut=shortcut)
        if out.exists():
            out.rename(retired)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return out
