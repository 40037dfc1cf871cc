"""One typed description of how a run picks and splits its images, validated in one place.

``SplitSpec`` holds the ``data.*`` options that decide which images a run uses and where each
goes. The data module builds it from its keyword arguments, ``covidxr-train`` builds it from the
config before any file is read, and ``build_index`` takes it whole, so every option is named,
typed and checked once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from covidxr.data.formats.classes import resolve_classes
from covidxr.data.splitting.audit import DEFAULT_THRESHOLD
from covidxr.utils.errors import ConfigError

DEDUP_MODES = ("group", "drop", "off")


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class SplitSpec:
    """Which images of a dataset a run uses and how they are split (the ``data.*`` options).

    Attributes:
        classes: 2 to 4 of COVID, Normal, Lung_Opacity, Viral Pneumonia; order = label index.
        split_fractions: train, val, test fractions of each class.
        seed: orders subsets and splits; the same seed gives the same split on any machine.
        split_file: a ``split.csv`` to reuse exactly instead of splitting.
        limit_per_class: a deterministic subset of at most this many images per class.
        balance: subsample every class to the size of the smallest (the reference study).
        verify: decode every image before training, naming every unreadable file at once.
        skip_corrupt: decode every image while indexing and drop (and record) unreadable ones.
        dedup: near-duplicates (pHash) in one split together (``group``), one kept per group
            (``drop``), or ignored (``off``); ``dedup_threshold``: the distance in bits.
        manifest: a label CSV (``path,label``, more columns) listing the images under the root.
        group_by: where each image's group comes from, kept in one split: a manifest column
            (``patient``), a DICOM keyword (``PatientID``, ``InstitutionName``), ``source`` (the
            release's collections), or ``none``.
        test_groups: values of ``group_by`` held out whole as the test split (sites, sources).
        test_sources: the same with ``group_by=source`` (kept from 0.2).
        folds: cross-validation: the train+val pool in this many folds (stratified, grouped);
            ``fold`` is the validation fold, the others train; the test split is the same for
            every fold.
        train_fraction: label efficiency: train on this share of the training split (whole
            groups, per class, nested across fractions); validation and test stay the same
            images. ``train_images``: the same as a number of images.
    """

    classes: tuple[str, ...] = ("COVID", "Normal")
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    seed: int = 42
    split_file: str | None = None
    limit_per_class: int | None = None
    balance: bool = False
    verify: bool = False
    skip_corrupt: bool = False
    dedup: str = "off"
    dedup_threshold: int = DEFAULT_THRESHOLD
    manifest: str | None = None
    group_by: str = "none"
    test_groups: tuple[str, ...] = ()
    test_sources: tuple[str, ...] = ()
    folds: int | None = None
    fold: int = 0
    train_fraction: float | None = None
    train_images: int | None = None

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.classes, str) or not isinstance(self.classes, Sequence):
            raise ConfigError(f"data.classes={self.classes}: give a list, e.g. [COVID,Normal].")
        fix("classes", resolve_classes(self.classes))
        self._fractions()
        if not _is_int(self.seed, 0):
            raise ConfigError(f"seed={self.seed}: give an integer >= 0.")
        if self.limit_per_class is not None and not _is_int(self.limit_per_class, 1):
            raise ConfigError(
                f"data.limit_per_class={self.limit_per_class}: give an integer >= 1, or null for "
                "every image."
            )
        for name in ("balance", "verify", "skip_corrupt"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"data.{name}={getattr(self, name)}: give true or false.")
        self._choice("dedup", DEDUP_MODES)
        if not isinstance(self.group_by, str) or not self.group_by.strip():
            raise ConfigError(
                f"data.group_by={self.group_by!r}: name a manifest column, a DICOM keyword, "
                "source, or none."
            )
        if not _is_int(self.dedup_threshold, 0) or self.dedup_threshold > 64:
            raise ConfigError(
                f"data.dedup_threshold={self.dedup_threshold}: give a pHash distance in bits, an "
                "integer from 0 to 64 (default 2)."
            )
        for name in ("test_groups", "test_sources"):
            values = getattr(self, name) or ()
            fix(name, tuple(str(v) for v in ((values,) if isinstance(values, str) else values)))
        if self.test_sources and (self.test_groups or self.group_by not in ("none", "source")):
            raise ConfigError(
                "data.test_sources holds out sources: use it with data.group_by=source (or none) "
                "and no data.test_groups, or use data.test_groups alone."
            )
        if self.test_groups and self.group_by == "none":
            raise ConfigError(
                f"data.test_groups={list(self.test_groups)} needs data.group_by: the manifest "
                "column or DICOM keyword they are values of (e.g. data.group_by=site)."
            )
        if self.folds is not None and not _is_int(self.folds, 2):
            raise ConfigError(
                f"data.folds={self.folds}: give an integer >= 2 (e.g. 5), or null for one split."
            )
        limit = self.folds or 1
        if not _is_int(self.fold, 0) or self.fold >= limit:
            raise ConfigError(
                f"data.fold={self.fold}: give an integer from 0 to {limit - 1} (data.folds="
                f"{self.folds})."
            )
        if self.train_fraction is not None and self.train_images is not None:
            raise ConfigError(
                "data.train_fraction and data.train_images both set: give one of them (a share of "
                "the training split, or a number of images)."
            )
        if self.train_fraction is not None and (
            isinstance(self.train_fraction, bool)
            or not isinstance(self.train_fraction, (int, float))
            or not 0 < self.train_fraction <= 1
        ):
            raise ConfigError(
                f"data.train_fraction={self.train_fraction}: give a share of the training split "
                "above 0 and at most 1 (e.g. 0.1), or null for all of it."
            )
        if self.train_images is not None and not _is_int(self.train_images, len(self.classes)):
            raise ConfigError(
                f"data.train_images={self.train_images}: give an integer of at least "
                f"{len(self.classes)} (one image per class), or null for the whole split."
            )
        for name in ("split_file", "manifest"):
            if getattr(self, name) is not None:
                fix(name, str(getattr(self, name)))

    @property
    def group_key(self) -> str | None:
        """Where groups come from, or None when images are only grouped as copies."""
        if self.test_sources:
            return "source"
        return None if self.group_by == "none" else self.group_by

    @property
    def held_groups(self) -> tuple[str, ...]:
        """Group values held out as the test split."""
        return self.test_groups or self.test_sources

    def _choice(self, name: str, choices: Sequence[str]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(
                f"data.{name}={getattr(self, name)!r}: choose one of {list(choices)}."
            )

    def _fractions(self) -> None:
        try:
            values = tuple(float(f) for f in self.split_fractions)
        except (TypeError, ValueError):
            values = ()
        if (
            len(values) != 3
            or any(not math.isfinite(v) or v < 0 for v in values)
            or not math.isclose(sum(values), 1.0, abs_tol=1e-6)
            or values[0] <= 0
        ):
            raise self._fraction_error()
        object.__setattr__(self, "split_fractions", values)

    def _fraction_error(self) -> ConfigError:
        fractions = self.split_fractions
        shown = list(fractions) if isinstance(fractions, Sequence) else fractions
        return ConfigError(
            f"data.split_fractions={shown}: give three fractions (train, val, test) that sum "
            "to 1, train and val above 0 (test too when test=true), e.g. [0.8,0.1,0.1]."
        )

    def require_splits(self, test: bool) -> None:
        """A training run validates (val > 0) and, with ``test``, tests: a test fraction, held-out
        sources or a saved split give it a test split."""
        if self.split_file is not None:
            return
        if self.split_fractions[1] <= 0 or (
            test and self.split_fractions[2] <= 0 and not self.held_groups
        ):
            raise self._fraction_error()

    @classmethod
    def options(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SplitSpec:
        """The spec from a mapping holding its fields among others (``cfg.data``)."""
        return cls(**{k: options[k] for k in cls.options() if k in options})

    def as_dict(self) -> dict[str, Any]:
        """Plain builtins (lists for tuples), as checkpoints and configs store them."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
