"""The ``LightningDataModule`` for the COVID-19 Radiography Database and its synthetic stand-in.

Batch size under DDP: ``batch_size`` is per process. With ``trainer.devices=N`` (times
``num_nodes``) every optimizer step sees ``N * batch_size`` images (times
``accumulate_grad_batches``); Lightning shards each split across processes with a
``DistributedSampler``, and wraps the optional weighted sampler in a distributed one, so each
process draws its own part of the weighted stream. Scale the learning rate yourself if you change
the effective batch size.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import torch
import torch.distributed as dist
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from covidxr.data.formats.classes import KNOWN_CLASSES
from covidxr.data.formats.decode import read_gray
from covidxr.data.loading.occlusion import Occluder
from covidxr.data.loading.sampling import EpochSampler, seed_pipeline
from covidxr.data.loading.transforms import build_transform
from covidxr.data.phantoms.synthetic import ensure_phantoms
from covidxr.data.splitting.index import build_index, external_index
from covidxr.data.splitting.spec import SplitSpec
from covidxr.data.splitting.splits import DatasetIndex, Sample
from covidxr.run_folder import RunFolder, data_root
from covidxr.utils.compat import epoch_in_progress
from covidxr.utils.config import to_builtin
from covidxr.utils.errors import ConfigError, DatasetError, MissingFileError
from covidxr.utils.io import read_checkpoint

log = logging.getLogger(__name__)


class XRayDataset(Dataset):
    """Decoded, transformed images of one split: ``(image [1,H,W] uint8, label, index)``.

    The index is the sample's position in the split: it places each prediction in the run's
    record of predictions whichever process (DDP rank) computed it.

    A key is an index, or ``(index, seed)`` from ``EpochSampler``: the augmentation of that draw
    is then seeded by it, wherever (in whichever worker) it is computed.
    """

    def __init__(
        self,
        root: Path,
        samples: Sequence[Sample],
        transform: A.Compose,
        occluder: Occluder | None = None,
    ) -> None:
        self.root, self.samples, self.transform = root, list(samples), transform
        self.occluder = occluder or Occluder()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        image = self.occluder(read_gray(self.root / sample.path), sample.path)
        if seed is not None:
            seed_pipeline(self.transform, seed)
        return self.transform(image=image)["image"], sample.label, index


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class RadiographyDataModule(LightningDataModule):
    """Index, split and load the database; see the module docstring for batch size under DDP.

    Loaders yield uint8 grey batches ``[B,1,H,W]``: the model normalises them on its device
    (``XRayClassifier.on_after_batch_transfer``), with its backbone's mean/std.

    Args:
        root: the dataset folder, or a folder above it (where the Kaggle archive was unpacked);
            with a ``manifest``, the folder its paths are relative to (default: the CSV's).
        image_size: side of the square network input.
        occlude: ``center`` or ``lungs`` blacks out that part of every image of every split
            (a shortcut control); ``occlude_border``: the frame ``center`` keeps.
        weighted_sampler: draw training batches with equal expected counts per class.
        train_augmentations: albumentations transforms applied to training images after resizing.
        output_dir: where ``split.csv`` is written (the run directory); None writes nothing.
        **split: the options of ``SplitSpec`` (classes, split_fractions, seed, split_file, ...):
            which images the run uses and how they are split.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        occlude: str = "none",
        occlude_border: float = 0.2,
        weighted_sampler: bool = False,
        train_augmentations: Sequence[A.BasicTransform] = (),
        output_dir: str | os.PathLike | None = None,
        **split: Any,
    ) -> None:
        super().__init__()
        unknown = sorted(set(split) - set(SplitSpec.options()))
        if unknown:
            accepted = sorted({*_init_parameters(type(self)), *SplitSpec.options()})
            raise ConfigError(
                f"data.{unknown[0]} is not an option of {type(self).__name__}: remove it, or use "
                f"one of {', '.join(accepted)}."
            )
        self.spec = SplitSpec(**split)
        self.save_hyperparameters(ignore=["train_augmentations", "output_dir", "split"])
        # Flat, plain builtins: checkpoints load with weights_only=True, and eval rebuilds this.
        self.hparams.pop("split", None)
        self.hparams.update(to_builtin({**dict(self.hparams), **self.spec.as_dict()}))
        if root is None and self.spec.manifest is None:
            raise ConfigError("data.root is not set: point it at the dataset folder.")
        self.root = data_root({"root": root, "manifest": self.spec.manifest})
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.train_augmentations = list(train_augmentations)
        self.occluder = Occluder(occlude, occlude_border, self.root)
        self.index: DatasetIndex | None = None
        #: set when resuming a checkpoint written mid-epoch: ``(epoch, images already seen)``
        self.resume_from: tuple[int, int] | None = None
        self.datasets: dict[str, XRayDataset] = {}

    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | os.PathLike,
        overrides: Mapping[str, Any] = (),
        split_file: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None,
    ) -> RadiographyDataModule:
        """The training run's data module, rebuilt to test its checkpoint on the same split.

        ``overrides`` (non-null values) replace recorded settings (``root`` when the data moved);
        the split is ``split_file``, else the run's ``split.csv``. Settings the data module no
        longer takes (mean/std, which moved to the model in 0.2) are left out, so checkpoints of
        earlier versions still evaluate.
        """
        checkpoint = read_checkpoint(ckpt_path)
        hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
        if not hparams:
            raise ConfigError(
                f"{ckpt_path} records no data settings: was it written by covidxr-train?"
            )
        datamodule_class = _recorded_class(checkpoint.get("datamodule_class", ""), ckpt_path)
        accepted = {*_init_parameters(datamodule_class), *SplitSpec.options()}
        hparams = {k: v for k, v in hparams.items() if k in accepted}
        hparams.update({k: v for k, v in dict(overrides).items() if v is not None})
        hparams["split_file"] = str(split_file or run_split_file(ckpt_path))
        return datamodule_class(**hparams, output_dir=output_dir)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.index.classes if self.index else self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)

    @property
    def class_counts(self) -> list[int]:
        """Training images per class, e.g. for loss weights; available after ``setup()``."""
        return self._require_index().class_counts("train")

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights (mean 1) for ``CrossEntropyLoss(weight=...)``."""
        counts = torch.tensor(self.class_counts, dtype=torch.float32)
        return counts.sum() / (len(counts) * counts.clamp(min=1))

    @classmethod
    def external(
        cls,
        root: str | os.PathLike,
        classes: Sequence[str],
        image_size: int,
        class_map: Mapping[str, str | None] | None = None,
        **kwargs,
    ) -> RadiographyDataModule:
        """Every image of another dataset as the test split, labelled by ``classes`` (its folder
        names mapped by ``class_map``), indexed now: a bad folder is named before any test."""
        datamodule = cls(root, classes=classes, image_size=image_size, **kwargs)
        datamodule.index = external_index(root, classes, class_map)
        return datamodule

    def setup(self, stage: str | None = None) -> None:
        if self.index is None:
            self.index = build_index(self.root, self.spec)
            if self.output_dir is not None:
                folder = RunFolder(self.output_dir)
                path = self.index.write_split_csv(folder.split)
                log.info("Wrote the split to %s", path)
                dropped = self.index.write_dropped_csv(folder.unreadable)
                if dropped is not None:
                    log.warning(
                        "%d unreadable image(s) left out: %s", len(self.index.dropped), dropped
                    )
        self.occluder.root = self.index.root
        self.occluder.check_masks([s.path for group in self.index.splits.values() for s in group])
        eval_transform = self._transform(())
        for split in ("train", "val", "test"):
            transform = self._transform(self.train_augmentations) if split == "train" else None
            self.datasets[split] = XRayDataset(
                self.index.root,
                self.index.splits[split],
                transform or eval_transform,
                self.occluder,
            )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or class-weighted) batches whose order and augmentation are a function of
        (seed, epoch): the same with any ``num_workers``, and replayed exactly on resume."""
        dataset = self._dataset("train")
        weights = None
        if self.hparams.weighted_sampler:
            weights = self.class_weights()[[s.label for s in dataset.samples]].tolist()
        sampler = EpochSampler(len(dataset), self.spec.seed, weights)
        sampler.set_epoch(epoch_in_progress(self.trainer))  # workers draw indices at once
        sampler.resume_from = self.resume_from
        # A last batch of one image cannot be trained (batch norm needs two): it is left out.
        lone = len(dataset) > 1 and len(dataset) % int(self.hparams.batch_size) == 1
        if lone:
            log.info("The training split's last batch would hold one image: it is left out")
        return self._loader(dataset, sampler=sampler, drop_last=lone)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_loader("test")

    def eval_loader(self, split: str, image_size: int | None = None) -> DataLoader:
        """Un-augmented, unshuffled batches of ``split``; each image once across processes.
        ``image_size``: resized to that side instead (a model trained at another size)."""
        dataset = self._dataset(split)
        if image_size not in (None, self.hparams.image_size):
            transform = build_transform(image_size)
            dataset = XRayDataset(dataset.root, dataset.samples, transform, dataset.occluder)
        # Lightning's own choice for test would pad shards with repeated images.
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False) if _distributed() else None
        return self._loader(dataset, sampler=sampler)

    def _transform(self, augmentations: Sequence[A.BasicTransform]) -> A.Compose:
        return build_transform(self.hparams.image_size, augmentations)

    def _require_index(self) -> DatasetIndex:
        if self.index is None:
            raise RuntimeError("Call setup() on the data module before asking for its data.")
        return self.index

    def _dataset(self, split: str) -> XRayDataset:
        self._require_index()
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise DatasetError(
                f"The {split} split of {self.index.root} is empty: add images, raise "
                "data.limit_per_class, or give it a larger fraction in data.split_fractions."
            )
        return dataset

    def _loader(self, dataset: XRayDataset, **kwargs) -> DataLoader:
        return loader(dataset, self.hparams, **kwargs)


def loader(dataset: Dataset, hparams: Mapping, **kwargs) -> DataLoader:
    """A DataLoader with a data module's ``batch_size``, ``num_workers``, ``pin_memory`` (when it
    has one) and ``persistent_workers`` (only where there are workers to keep)."""
    return DataLoader(
        dataset,
        batch_size=hparams["batch_size"],
        num_workers=hparams["num_workers"],
        pin_memory=hparams.get("pin_memory", False),
        persistent_workers=hparams["persistent_workers"] and hparams["num_workers"] > 0,
        **kwargs,
    )


class SyntheticDataModule(RadiographyDataModule):
    """The same data module over synthetic phantoms, generated into ``root`` on first use.

    All four classes are generated, so any ``classes`` selection reads the same cached folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        per_class: int = 100,
        phantom_size: int = 224,
        phantom_seed: int = 0,
        shortcut: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(root, **kwargs)  # records per_class etc. in hparams too

    def prepare_data(self) -> None:
        hp = self.hparams
        ensure_phantoms(
            self.root,
            hp.per_class,
            KNOWN_CLASSES,
            hp.phantom_size,
            hp.phantom_seed,
            shortcut=hp.shortcut,
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers use outside a Trainer and every DDP rank's view
        super().setup(stage)


def _init_parameters(datamodule_class: type) -> set[str]:
    """Named parameters of the data module class and of its bases up to this module's."""
    return {
        name
        for kind in datamodule_class.__mro__
        if issubclass(kind, RadiographyDataModule)
        for name, p in inspect.signature(kind.__init__).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
    }


def _recorded_class(name: str, ckpt_path: str | os.PathLike) -> type[RadiographyDataModule]:
    """The data module class a checkpoint names, found by its class name among covidxr's own
    (never by importing the module a file names, which would run its code), so checkpoints
    written before the data modules moved (``covidxr.data.datamodule``) still load."""
    if not name:
        return RadiographyDataModule
    module_name, _, class_name = name.rpartition(".")
    known = {kind.__name__: kind for kind in (RadiographyDataModule, *_subclasses())}
    if not module_name.startswith("covidxr.") or class_name not in known:
        raise ConfigError(
            f"{ckpt_path} names the data module {name!r}, which is not one of covidxr's. "
            "Was it written by covidxr-train?"
        )
    return known[class_name]


def _subclasses(kind: type = RadiographyDataModule) -> list[type[RadiographyDataModule]]:
    return [sub for direct in kind.__subclasses__() for sub in (direct, *_subclasses(direct))]


def run_split_file(ckpt_path: str | os.PathLike) -> Path:
    """``<run>/split.csv`` for ``<run>/checkpoints/x.ckpt``, or a clear error."""
    split = RunFolder.of_checkpoint(ckpt_path).split
    if not split.is_file():
        raise MissingFileError(
            f"No {split.name} found for {ckpt_path} (looked at {split}). "
            "Pass split_file=<the training run's split.csv>."
        )
    return split
