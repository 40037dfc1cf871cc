"""The database's class names: their spellings across releases and the order of labels."""

from __future__ import annotations

import re
from collections.abc import Sequence

from covidxr.utils.errors import DatasetError

#: The database's four classes, in the canonical label order used when none is given.
KNOWN_CLASSES: tuple[str, ...] = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
_ALIASES = {
    "covid": "COVID",
    "covid19": "COVID",
    "normal": "Normal",
    "lungopacity": "Lung_Opacity",
    "viralpneumonia": "Viral Pneumonia",
}


def normalize_class_name(name: str) -> str:
    """Map a spelling the releases used (``COVID-19``, ``NORMAL``, ``lung opacity``) to its class.

    Unknown names are returned unchanged so the caller can report them.
    """
    return _ALIASES.get(re.sub(r"[\s_\-]+", "", name).lower(), name)


def resolve_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """Normalise the configured class list; its order is the label order."""
    names = tuple(normalize_class_name(str(c)) for c in classes)
    unknown = [c for c, n in zip(classes, names, strict=True) if n not in KNOWN_CLASSES]
    if unknown:
        raise DatasetError(
            f"Unknown class(es) in data.classes: {unknown}. Choose from {list(KNOWN_CLASSES)}."
        )
    if len(set(names)) != len(names):
        raise DatasetError(f"data.classes lists a class twice: {list(classes)}.")
    if not 2 <= len(names) <= 4:
        raise DatasetError(
            f"data.classes={list(classes)}: give 2 to 4 classes, e.g. data.classes=[COVID,Normal]."
        )
    return names
