"""The images to score: files, folders and globs expanded, decoded as every predictor expects.

Every predictor takes the same uint8 grey batches ``[B,1,S,S]`` (resized only); normalisation is
inside the model, so all forms compute one function of the same pixels.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from covidxr.data.formats.decode import UnreadableImageError, read_gray
from covidxr.data.formats.layout import is_image_file, natural_key
from covidxr.data.loading.transforms import build_transform
from covidxr.utils.errors import MissingFileError


def expand_inputs(inputs: Sequence[str | os.PathLike], skip: Sequence[Path] = ()) -> list[Path]:
    """Files, folders (their images below, recursively) and glob patterns, in order.

    In folders only image files count (a README or Thumbs.db is not a failed X-ray), and nothing
    under ``skip`` (this run's own outputs: its CSV and overlays, when written inside an input
    folder). Files named one by one are taken as they are. A symlink loop in a folder is listed
    like an unreadable file: its row names the loop, the other files are scored.
    """
    skipped = [Path(s).resolve() for s in skip]

    def wanted(p: Path) -> bool:
        if p.name.startswith("."):
            return False
        try:
            resolved = p.resolve()
        except (RuntimeError, OSError):  # a symlink loop: listed, so that its row says why
            return p.is_symlink()
        return (
            p.is_file()
            and is_image_file(p)
            and not any(resolved == s or s in resolved.parents for s in skipped)
        )

    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = (p for p in path.rglob("*") if wanted(p))
            files.extend(sorted(found, key=lambda p: natural_key(str(p))))
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(glob.glob(str(path), recursive=True), key=natural_key)
            if not matches:
                raise MissingFileError(f"Input {item} is not a file, folder or matching glob.")
            files.extend(Path(m) for m in matches if Path(m).is_file())
    return list(dict.fromkeys(files))


class ImageFiles(Dataset):
    """``(uint8 [1,S,S], index, error)``: an unreadable file yields zeros and its error."""

    def __init__(self, files: Sequence[Path], image_size: int) -> None:
        self.files, self.image_size = list(files), image_size
        self.transform = build_transform(image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            image = self.transform(image=read_gray(self.files[index]))["image"]
            return image, index, ""
        except UnreadableImageError as exc:
            return (
                torch.zeros(1, self.image_size, self.image_size, dtype=torch.uint8),
                index,
                exc.reason,
            )


def batches(
    files: Sequence[Path], image_size: int, batch_size: int = 32, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, list[int], list[str]]]:
    loader = DataLoader(
        ImageFiles(files, image_size), batch_size=batch_size, num_workers=num_workers
    )
    for images, indices, errors in loader:
        yield images, indices.tolist(), list(errors)
