"""Find the images of the COVID-19 Radiography Database in any of its release layouts.

The database has shipped in three layouts (docs/study.md):

* ``current``: ``<Class>/images/<Class>-N.png`` beside ``<Class>/masks/`` and ``*.metadata.xlsx``;
* ``flat``:    ``<Class>/<Class>-N.png`` (the release the reference study used);
* ``2020``:    ``COVID-19/``, ``NORMAL/``, ``Viral Pneumonia/`` holding ``NAME (N).png``.

Pure Python over paths: cheap to test and to run before any image is decoded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from covidxr.data.formats.classes import KNOWN_CLASSES, normalize_class_name
from covidxr.data.formats.dicom import DICOM_MAGIC, DICOM_SUFFIXES
from covidxr.utils.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", *DICOM_SUFFIXES})
KAGGLE_HINT = (
    "Download the COVID-19 Radiography Database from Kaggle "
    "(https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database), unpack it into "
    "$COVIDXR_DATA_DIR (default: data/) and point data.root at it, or generate synthetic phantoms "
    "with `covidxr-synth data/synthetic-phantoms`."
)
LAYOUT_HELP = (
    "Expected one of the database's layouts: <Class>/images/*.png (current release), "
    "<Class>/*.png (older release), or COVID-19/, NORMAL/, 'Viral Pneumonia'/ with 'NAME (N).png' "
    "(2020 release); class folders: COVID (or COVID-19), Normal (or NORMAL), Lung_Opacity, "
    "Viral Pneumonia."
)
_NATURAL_CHUNKS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[int | str]:
    """Sort key so that ``COVID-2`` comes before ``COVID-10``."""
    return [int(c) if c.isdigit() else c.lower() for c in _NATURAL_CHUNKS.split(text)]


@dataclass(frozen=True)
class ClassFolder:
    """One class as found on disk."""

    name: str
    path: Path
    image_dir: Path
    layout: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class DatasetLayout:
    """What a root folder holds: the resolved dataset folder and its class folders."""

    root: Path
    classes: dict[str, ClassFolder]
    #: per image (relative path), the other columns of a label manifest (patient, site, split)
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        return "+".join(sorted({c.layout for c in self.classes.values()}))

    def counts(self) -> dict[str, int]:
        return {name: len(c.files) for name, c in self.classes.items()}

    @property
    def files(self) -> list[Path]:
        """Every image of every class, class by class."""
        return [f for folder in self.classes.values() for f in folder.files]

    def relative(self, path: Path) -> str:
        """``path`` relative to the dataset folder, as split files record it."""
        return path.relative_to(self.root).as_posix()


def is_image_file(path: str | os.PathLike) -> bool:
    """An image by its suffix, or a DICOM by content (archives often name files by UID, with no
    extension or a numeric one)."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == DICOM_MAGIC
    except OSError:
        return False


def _class_folder(path: Path, aliases: Mapping[str, str | None]) -> ClassFolder | None:
    """Recognise a class folder and its layout, or return None for anything else (a folder
    ``aliases`` maps to None is left out on purpose)."""
    if path.name in aliases:
        if aliases[path.name] is None:
            return None
        name = normalize_class_name(str(aliases[path.name]))
    else:
        name = normalize_class_name(path.name)
    if name not in KNOWN_CLASSES:
        return None
    images_dir = path / "images"
    if images_dir.is_dir():
        layout, folder = "current", images_dir
    else:
        layout, folder = "flat", path
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            # a broken link is kept, so that verification names it instead of losing it
            if not e.name.startswith(".")
            and (e.is_file() or e.is_symlink())
            and is_image_file(e.path)
        ]
    files = [folder / n for n in sorted(names, key=natural_key)]
    if layout == "flat" and (
        normalize_class_name(path.name) != path.name or any(" (" in f.name for f in files[:5])
    ):
        layout = "2020"
    return ClassFolder(name, path, folder, layout, tuple(files))


def _class_folders(folder: Path, aliases: Mapping[str, str | None]) -> dict[str, ClassFolder]:
    found: dict[str, ClassFolder] = {}
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        cf = _class_folder(child, aliases)
        if cf is not None:
            if cf.name in found:
                raise DatasetError(
                    f"Two folders in {folder} both hold class {cf.name!r}: "
                    f"{found[cf.name].path.name!r} and {child.name!r}. Keep one of them."
                )
            found[cf.name] = cf
    return found


def find_layout(
    root: str | os.PathLike, max_depth: int = 2, aliases: Mapping[str, str | None] = {}
) -> DatasetLayout:
    """Resolve ``root`` to the folder holding the class folders.

    ``root`` may be that folder, or a folder above it such as the one the Kaggle archive was
    unpacked into (``archive/COVID-19_Radiography_Dataset/``). ``aliases`` maps folder names of
    other datasets to classes (``PNEUMONIA: Viral Pneumonia``), or to None to leave them out.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset root {root} does not exist or is not a folder. {KAGGLE_HINT}")
    frontier = [root]
    for _ in range(max_depth + 1):
        hits = [(f, _class_folders(f, aliases)) for f in frontier]
        hits = [(f, c) for f, c in hits if c]
        if len(hits) == 1:
            return DatasetLayout(root=hits[0][0], classes=hits[0][1])
        if len(hits) > 1:
            names = ", ".join(str(f) for f, _ in hits)
            raise DatasetError(
                f"Several datasets found under {root}: {names}. Point data.root at one of them."
            )
        frontier = [
            c for f in frontier for c in sorted(f.iterdir()) if c.is_dir() and c.name[0] != "."
        ]
    raise DatasetError(f"No class folders found in {root}. {LAYOUT_HELP} {KAGGLE_HINT}")
