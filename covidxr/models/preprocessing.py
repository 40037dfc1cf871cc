"""What turns an image file into a model's input and its output into a label.

A trained model owns these settings (``XRayClassifier.preprocessing``, from its hyper-parameters);
an exported model carries them in a JSON file beside it. No consumer re-types them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from covidxr.utils.errors import ConfigError
from covidxr.utils.io import atomic_write

#: Where a checkpoint keeps the decision threshold chosen on validation (covidxr-eval).
THRESHOLD_KEY = "decision_threshold"


def check_positive_class(class_names: Sequence[str], positive: str) -> None:
    """The positive class of binary metrics must be one of the model's two classes: another
    name would silently swap sensitivity and specificity."""
    if len(class_names) == 2 and positive not in class_names:
        raise ConfigError(
            f"model.positive_class={positive} is not one of data.classes {list(class_names)}: "
            f"choose one of them, e.g. model.positive_class={class_names[0]}."
        )


def positive_index(class_names: Sequence[str], positive: str | None = "COVID") -> int:
    """The label of the positive class of binary metrics: ``positive`` if present, else 1."""
    names = list(class_names)
    return names.index(positive) if positive in names else 1


@dataclass(frozen=True)
class Preprocessing:
    """Input size, normalisation, class names and the decision rule of one model."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    positive_class: str = "COVID"
    threshold: float | None = None  # two classes: p(positive) >= threshold -> positive

    @classmethod
    def read(cls, path: str | os.PathLike) -> Preprocessing:
        """The JSON ``covidxr-export`` writes beside a model; one line naming it when damaged."""
        try:
            fields = json.loads(Path(path).read_text())
            fields = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
            return cls(
                **{**fields, **{k: tuple(fields[k]) for k in ("mean", "std", "class_names")}}
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"{path} is not a preprocessing file covidxr-export wrote ({type(exc).__name__}: "
                f"{exc}). Export the model again."
            ) from exc

    def write(self, path: str | os.PathLike, **extra: object) -> Path:
        """The JSON beside an exported model; ``extra`` (how it was made, its accuracy gate) is
        recorded after the preprocessing fields and ignored when read."""
        with atomic_write(path) as fh:
            fh.write(json.dumps({**asdict(self), **extra}, indent=2) + "\n")
        return Path(path)

    @property
    def positive_index(self) -> int:
        return positive_index(self.class_names, self.positive_class)

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Predicted label per row: argmax, or for two classes the positive class's threshold."""
        threshold = threshold if threshold is not None else self.threshold
        if len(self.class_names) != 2 or threshold is None:
            return probs.argmax(axis=1)
        positive = self.positive_index
        return np.where(probs[:, positive] >= threshold, positive, 1 - positive)
