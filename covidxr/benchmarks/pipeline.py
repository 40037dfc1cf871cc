"""Input pipeline throughput: covidxr's loader against torchvision ``ImageFolder`` + PIL."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Subset

from covidxr.data.formats.decode import read_gray
from covidxr.data.formats.dicom import write_dicom
from covidxr.data.formats.layout import DatasetLayout, find_layout
from covidxr.data.loading.datamodule import XRayDataset
from covidxr.data.loading.transforms import NormalizeToRGB, build_transform
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.data.splitting.groups import group_values
from covidxr.data.splitting.splits import Sample
from covidxr.utils.config import load_augmentations
from covidxr.utils.env import real_data_dir
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

WORKERS = (0, 2)


def images_per_second(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    on_batch: Callable[[torch.Tensor], torch.Tensor] | None = None,
    epochs: int = 2,
) -> float:
    """Iterate the whole dataset ``epochs`` times; the first batch (worker start-up) is not timed.

    ``on_batch`` runs on each collated batch in this process (e.g. normalisation).
    """
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0
    )
    seen, start = 0, None
    for _ in range(epochs):
        for batch in loader:  # (images, labels[, indices])
            images = batch[0]
            if on_batch is not None:
                images = on_batch(images)
            if start is None:
                start = time.perf_counter()
                continue
            seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def _baseline(root: Path, samples: Sequence[Sample], image_size: int) -> Dataset:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    folder = datasets.ImageFolder(str(root), transform=transform)
    position = {Path(p).relative_to(root).as_posix(): i for i, (p, _) in enumerate(folder.samples)}
    return Subset(folder, [position[s.path] for s in samples])


def bench_data(
    root: Path | None, images: int, image_size: int, batch_size: int, console: Console
) -> None:
    """Input pipeline images/s against ImageFolder + PIL, printed as a table on ``console``."""
    with tempfile.TemporaryDirectory() as tmp:
        if root is None:
            root = real_data_dir()
            if root is not None:
                console.print(f"Real X-rays from COVIDXR_REAL_DATA: {root}", highlight=False)
        if root is None:
            console.print(
                "COVIDXR_REAL_DATA is not set: benchmarking on 2 x 256 synthetic phantoms."
            )
            root = generate_phantoms(Path(tmp) / "phantoms", per_class=256, size=224)
        layout = find_layout(root)
        samples = [
            Sample(layout.relative(f), label, name)
            for label, (name, folder) in enumerate(layout.classes.items())
            for f in folder.files
        ][:: max(1, sum(layout.counts().values()) // images)][:images]
        ours = XRayDataset(layout.root, samples, build_transform(image_size))
        augmented = build_transform(image_size, augmentations=load_augmentations("default"))
        ours_aug = XRayDataset(layout.root, samples, augmented)
        normalize = NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)
        baseline = _baseline(layout.root, samples, image_size)
        rows = {
            "covidxr loader (uint8)": (ours, None),
            "covidxr + default aug": (ours_aug, None),
            "covidxr + CPU normalise": (ours, normalize),
            "ImageFolder + PIL": (baseline, None),
        }
        table = Table(title=f"Input pipeline: {len(samples)} images from {layout.root}")
        table.add_column("images/s")
        for workers in WORKERS:
            table.add_column(f"{workers} workers", justify="right")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one decoding thread per worker, as the loaders use
        try:
            rates = {
                name: [images_per_second(ds, batch_size, w, fn) for w in WORKERS]
                for name, (ds, fn) in rows.items()
            }
        finally:  # training later in this process computes with all its threads again
            torch.set_num_threads(threads)
        base = rates["ImageFolder + PIL"]
        for name, values in rates.items():
            table.add_row(name, *(f"{v:,.0f}" for v in values))
        for name in ("covidxr loader (uint8)", "covidxr + CPU normalise"):
            ratios = (f"{a / b:.2f}x" for a, b in zip(rates[name], base, strict=True))
            table.add_row(f"ratio: {name} / baseline", *ratios, style="bold")
        console.print(table)
        console.print(
            f"{image_size} px, batch {batch_size}. The covidxr loader yields uint8 grey batches; "
            "the model normalises them on its device (on_after_batch_transfer). The 'CPU "
            "normalise' row adds that step on this CPU, for a CPU-only comparison."
        )
        bench_formats(layout, samples, Path(tmp), console)


#: How the same X-rays are stored for ``bench_formats``: name -> ``write_dicom`` options.
DICOM_FORMS = {
    "DICOM 8-bit": {},
    "DICOM 12-bit windowed": {"bits_stored": 12, "rescale": (0.5, -100.0)},
    "DICOM RLE Lossless": {"bits_stored": 12, "compress": "RLELossless"},
    "DICOM JPEG 2000 lossless": {"bits_stored": 12, "compress": "JPEG2000Lossless"},
}


def _rate(items: Sequence, work: Callable) -> float:
    start = time.perf_counter()
    for item in items:
        work(item)
    return len(items) / (time.perf_counter() - start)


def bench_formats(
    layout: DatasetLayout, samples: Sequence[Sample], tmp: Path, console: Console
) -> None:
    """Images/s indexing and decoding the same X-rays as PNG and as DICOM (one thread)."""
    table = Table(title=f"Formats: the same {len(samples)} X-rays, one thread")
    for column in ("stored as", "MB", "list images/s", "headers images/s", "decode images/s"):
        table.add_column(column, justify="right" if column != "stored as" else "left")
    files = [layout.root / s.path for s in samples]
    start = time.perf_counter()
    found = find_layout(layout.root)
    listed = len(found.files) / (time.perf_counter() - start)
    size = sum(f.stat().st_size for f in files) / 1e6
    table.add_row("PNG", f"{size:.1f}", f"{listed:,.0f}", "-", f"{_rate(files, read_gray):,.0f}")
    for name, options in DICOM_FORMS.items():
        root = tmp / name.replace(" ", "_")
        converted = []
        try:
            for i, (sample, file) in enumerate(zip(samples, files, strict=True)):
                target = root / sample.class_name / "images" / f"{Path(sample.path).stem}.dcm"
                target.parent.mkdir(parents=True, exist_ok=True)
                gray = read_gray(file)
                write_dicom(target, gray, attributes={"PatientID": f"P{i // 3}"}, **options)
                converted.append(target)
        except RuntimeError:  # pydicom has no encoder for it here
            table.add_row(name, "-", "-", "-", "no encoder (pip install covidxr[dicom])")
            continue
        start = time.perf_counter()
        dicom_layout = find_layout(root)
        listed = len(dicom_layout.files) / (time.perf_counter() - start)
        relative = [dicom_layout.relative(f) for f in dicom_layout.files]
        start = time.perf_counter()
        group_values(dicom_layout, relative, "PatientID")
        headers = len(relative) / (time.perf_counter() - start)
        size = sum(f.stat().st_size for f in converted) / 1e6
        decode = _rate(converted, read_gray)
        table.add_row(name, f"{size:.1f}", f"{listed:,.0f}", f"{headers:,.0f}", f"{decode:,.0f}")
    console.print(table)
    console.print(
        "list: finding the images in class folders; headers: reading PatientID for "
        "data.group_by (pixels skipped, 8 threads); decode: read_gray to 8-bit grey."
    )
