"""The unlabeled images ``covidxr-pretrain`` learns from, and the labeled ones its kNN monitor
scores.

Input is any folder (every image file below it, any layout, labels ignored) or a CSV with a
``path`` column. ``exclude_split=<run>/split.csv`` leaves out the images that run validates or
tests on, so a later fine-tune's test images were never seen, not even without labels. The
training stream is ``EpochSampler``'s (a function of seed and epoch, replayed exactly after a
resume mid-epoch); each view is seeded by its draw.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from covidxr.data.formats.decode import read_gray
from covidxr.data.formats.layout import natural_key
from covidxr.data.loading.datamodule import loader
from covidxr.data.loading.sampling import EpochSampler
from covidxr.data.loading.transforms import build_transform
from covidxr.data.splitting.splits import SplitRow, read_split_rows, seeded_order
from covidxr.inference.inputs import expand_inputs
from covidxr.pretraining.views import XRayViews
from covidxr.run_folder import RunFolder
from covidxr.utils.compat import epoch_in_progress
from covidxr.utils.errors import ConfigError, DatasetError, MissingFileError
from covidxr.utils.io import atomic_write

log = logging.getLogger(__name__)
#: The splits of a run that ``exclude_split`` keeps out of pretraining.
HELD_OUT_SPLITS = ("val", "test")


def _matches(files: Sequence[Path], rows: Sequence[SplitRow]) -> dict[str, Path]:
    """Each row's file among ``files``: the one whose path ends with the row's relative path
    (split.csv paths are relative to a data root this run may see from elsewhere)."""
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    found = {}
    for row in rows:
        tail = Path(row.path).parts
        for f in by_name.get(Path(row.path).name, []):
            if f.parts[-len(tail) :] == tail:
                found[row.path] = f
                break
    return found


def list_inputs(root: str | os.PathLike | None, manifest: str | os.PathLike | None) -> list[Path]:
    """Every image of ``root`` (recursively) or of a CSV's ``path`` column; none is an error."""
    if manifest is not None:
        manifest = Path(manifest).expanduser()
        if not manifest.is_file():
            raise MissingFileError(f"data.manifest={manifest} does not exist.")
        base = Path(root).expanduser() if root is not None else manifest.parent
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if "path" not in (reader.fieldnames or ()):
                raise DatasetError(f"data.manifest={manifest} has no path column.")
            files = [base / row["path"] for row in reader if row["path"].strip()]
        absent = [f for f in files if not f.is_file()]
        if absent:
            raise MissingFileError(
                f"data.manifest={manifest}: {len(absent)} listed file(s) do not exist, e.g. "
                f"{absent[0]}: fix the paths or data.root (the folder they are relative to)."
            )
    else:
        if root is None:
            raise ConfigError("data.root is not set: point it at a folder of X-rays.")
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise MissingFileError(f"data.root={folder} is not a folder of X-rays.")
        files = expand_inputs([folder])
    if not files:
        raise DatasetError(
            f"No image files under {manifest or root} (looked for .png .jpg .tif .dcm, "
            "recursively): point data.root at a folder of X-rays."
        )
    return sorted(files, key=lambda p: natural_key(str(p)))


def excluded(files: list[Path], split_file: str | os.PathLike) -> tuple[list[Path], int]:
    """``files`` less the validation and test images of ``split_file``, and how many went."""
    rows = [r for r in read_split_rows(split_file, "exclude_split") if r.split in HELD_OUT_SPLITS]
    found = _matches(files, rows)
    if rows and not found:
        raise DatasetError(
            f"exclude_split={split_file}: none of its {len(rows)} validation/test images is "
            "among the inputs: is it the split of a run on these images?"
        )
    if len(found) < len(rows):
        log.warning(
            "exclude_split: %d of %d validation/test images of %s are not among the inputs",
            len(rows) - len(found),
            len(rows),
            split_file,
        )
    drop = set(found.values())
    return [f for f in files if f not in drop], len(drop)


def list_hash(root: Path, files: Sequence[Path]) -> str:
    """sha256 of the sorted relative paths: which images a trunk saw, recorded in its passport."""
    names = sorted(str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


class ViewsDataset(Dataset):
    """``(views, index)`` for a key ``(index, seed)`` of ``EpochSampler``."""

    def __init__(self, files: Sequence[Path], views: XRayViews) -> None:
        self.files, self.views = list(files), views

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        index, seed = key
        return self.views(read_gray(self.files[index]), seed), index


class LabeledImages(Dataset):
    """``(uint8 [1,S,S], label)``, resized only: the kNN monitor's bank and queries."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], image_size: int) -> None:
        self.files, self.labels = list(files), list(labels)
        self.transform = build_transform(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.transform(image=read_gray(self.files[index]))["image"]
        return image, self.labels[index]


class UnlabeledDataModule(LightningDataModule):
    """Views of unlabeled X-rays for training; with ``knn_split``, a kNN monitor's labeled
    ``bank`` (that run's training images) and ``queries`` (its validation images) for
    validation.

    Args:
        root: a folder of X-rays (any layout), or the folder a ``manifest``'s paths are
            relative to.
        views: a lightly multi-view transform (``ssl.views``), with ``normalize=None``.
        exclude_split: a run's ``split.csv``: its validation and test images are left out.
        knn_split: a run's ``split.csv`` whose train/val images (found among the inputs' folder
            or under ``knn_root``) score the trunk by kNN after every epoch; None: no monitor.
        knn_images: at most this many bank and query images each (seeded, per class).
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        views: object,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        persistent_workers: bool = False,
        manifest: str | os.PathLike | None = None,
        exclude_split: str | os.PathLike | None = None,
        knn_split: str | os.PathLike | None = None,
        knn_root: str | os.PathLike | None = None,
        knn_images: int = 400,
        seed: int = 0,
        output_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["views", "output_dir"])
        self.views = XRayViews(views, image_size)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.files: list[Path] = []
        self.excluded = 0
        self.knn: dict[str, LabeledImages] = {}
        self.classes: list[str] = []
        #: set when resuming a checkpoint written mid-epoch: ``(epoch, images already seen)``
        self.resume_from: tuple[int, int] | None = None

    @property
    def root(self) -> Path:
        hp = self.hparams
        base = hp.root if hp.root is not None else Path(str(hp.manifest)).parent
        return Path(str(base)).expanduser().resolve()

    def setup(self, stage: str | None = None) -> None:
        if self.files:
            return
        hp = self.hparams
        found = list_inputs(hp.root, hp.manifest)
        files = found
        if hp.exclude_split is not None:
            files, self.excluded = excluded(found, hp.exclude_split)
            if not files:
                raise DatasetError(
                    f"exclude_split={hp.exclude_split} leaves no image to pretrain on."
                )
        self.files = files
        if len(files) < int(hp.batch_size):
            raise DatasetError(
                f"{len(files)} image(s) to pretrain on, fewer than data.batch_size="
                f"{hp.batch_size}: lower data.batch_size or add images (a method needs whole "
                "batches)."
            )
        if hp.knn_split is not None:
            self._knn_sets(found if hp.knn_root is None else expand_inputs([hp.knn_root]))
        if self.output_dir is not None:
            self._write_list()

    def _knn_sets(self, pool: list[Path]) -> None:
        """The kNN bank (``knn_split``'s training images) and queries (its validation ones),
        found in ``pool``: every input before ``exclude_split``, or ``knn_root``'s images."""
        hp = self.hparams
        rows = read_split_rows(hp.knn_split, "knn_split")
        found = _matches(pool, rows)
        self.classes = sorted({r.class_name for r in rows})
        for split, name in (("train", "bank"), ("val", "queries")):
            chosen: list[SplitRow] = []
            for cls in self.classes:
                paths = [r.path for r in rows if r.split == split and r.class_name == cls]
                keep = seeded_order([p for p in paths if p in found], hp.seed)
                chosen += [SplitRow(p, cls, split) for p in keep[: int(hp.knn_images)]]
            if not chosen:
                raise DatasetError(
                    f"knn_split={hp.knn_split}: no {split} image of it was found among the "
                    "inputs: give knn_root=<the folder it was split from>."
                )
            labels = [self.classes.index(r.class_name) for r in chosen]
            self.knn[name] = LabeledImages([found[r.path] for r in chosen], labels, hp.image_size)

    def _write_list(self) -> None:
        """Every image pretraining sees, relative to its root (``RunFolder.pretrain_images``)."""
        with atomic_write(RunFolder(self.output_dir).pretrain_images, newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path"])
            for f in self.files:
                writer.writerow([f.relative_to(self.root) if f.is_relative_to(self.root) else f])

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSampler(len(self.files), self.hparams.seed)
        sampler.set_epoch(epoch_in_progress(self.trainer))
        sampler.resume_from = self.resume_from
        return loader(
            ViewsDataset(self.files, self.views), self.hparams, sampler=sampler, drop_last=True
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [
            loader(self.knn[name], self.hparams) for name in ("bank", "queries") if name in self.knn
        ]
