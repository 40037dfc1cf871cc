"""``covidxr-bench``: throughput figures for humans (``make bench``); tests never time things.

``covidxr-bench data`` measures images/s of the input pipeline (decode + augment + collate) beside
a torchvision ``ImageFolder`` + PIL baseline reading the same files, with 0 and 2 workers.
``covidxr-bench train`` measures training images/s through the Lightning Trainer beside a plain
PyTorch loop on the same model, batches and threads. ``covidxr-bench gpu`` measures the GPU path:
training images/s at 224 px in fp32, bf16 mixed precision, bf16 + channels_last and + compile,
the share of step time spent waiting for data with 4/8/16 workers, and peak memory.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning import Callback
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Subset

from covidxr.data.datamodule import RadiographyDataModule, XRayDataset
from covidxr.data.index import Sample, find_layout
from covidxr.data.synthetic import generate_phantoms
from covidxr.data.transforms import NormalizeToRGB, build_transform
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
        for images, _labels in loader:
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


def bench_data(root: Path | None, images: int, image_size: int, batch_size: int) -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        if root is None:
            root = real_data_dir()
        if root is None:
            console.print("Real data not found: benchmarking on 2 x 256 synthetic phantoms.")
            root = generate_phantoms(Path(tmp) / "phantoms", per_class=256, size=224)
        layout = find_layout(root)
        samples = [
            Sample(f.relative_to(layout.root).as_posix(), label, name)
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
        torch.set_num_threads(1)
        rates = {
            name: [images_per_second(ds, batch_size, w, fn) for w in WORKERS]
            for name, (ds, fn) in rows.items()
        }
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


class _StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.end = time.perf_counter()


def _trainer_rate(batches: list, warmup: int) -> float:
    from lightning import Trainer

    from covidxr.models.module import XRayClassifier

    model = XRayClassifier(optimizer=functools.partial(torch.optim.Adam, lr=1e-4))
    timer = _StepTimer(warmup)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    images = sum(x.shape[0] for x, _ in batches[warmup:])
    return images / (timer.end - timer.start)


def _plain_rate(batches: list, warmup: int) -> float:
    from covidxr.models.module import XRayClassifier

    model = XRayClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = 0.0
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), labels)
        loss.backward()
        optimizer.step()
    images = sum(x.shape[0] for x, _ in batches[warmup:])
    return images / (time.perf_counter() - start)


def bench_train(image_size: int, batch_size: int, steps: int, rounds: int, warmup: int = 3) -> None:
    """Training images/s: a Trainer with covidxr's module against a plain PyTorch loop.

    Both see the same preloaded uint8 batches and normalise them the model's way, with the same
    model and thread count, so the ratio is the framework's overhead (hooks, metrics, logging),
    not data loading.
    """
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_phantoms(Path(tmp) / "p", per_class=batch_size * steps // 2 + 1, size=64)
        dm = RadiographyDataModule(root, image_size=image_size, batch_size=batch_size)
        dm.setup()
        loader = DataLoader(dm.datasets["train"], batch_size=batch_size, drop_last=True)
        batches = list(itertools.islice(loader, steps + warmup))
    plain, lightning = [], []
    for _ in range(rounds):  # interleaved, best of each: the fairest figure on a shared machine
        plain.append(_plain_rate(batches, warmup))
        lightning.append(_trainer_rate(batches, warmup))
    table = Table(title=f"Training, {image_size} px, batch {batch_size}, {steps} timed steps")
    table.add_column("images/s")
    table.add_column("best", justify="right")
    table.add_column("all rounds", justify="right")
    for name, rates in (("plain PyTorch loop", plain), ("Lightning Trainer (covidxr)", lightning)):
        table.add_row(name, f"{max(rates):.2f}", ", ".join(f"{r:.2f}" for r in rates))
    table.add_row("ratio Trainer / plain", f"{max(lightning) / max(plain):.3f}", "", style="bold")
    console.print(table)
    console.print(f"torch threads: {torch.get_num_threads()}")


def _gpu_steps_per_second(
    batch_size: int, image_size: int, steps: int, bf16: bool, channels_last: bool, compiled: bool
) -> tuple[float, float]:
    """Training images/s on device-resident uint8 batches (no data loading) and peak GiB."""
    from covidxr.models.module import XRayClassifier

    device = torch.device("cuda")
    torch.cuda.reset_peak_memory_stats()
    model = XRayClassifier(channels_last=channels_last, compile=compiled).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch_size, 1, image_size, image_size), dtype=torch.uint8)
    images, labels = images.to(device), torch.randint(0, 2, (batch_size,), device=device)
    warmup = 10 if compiled else 3
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    rate = batch_size * steps / (time.perf_counter() - start)
    return rate, torch.cuda.max_memory_allocated() / 2**30


def _data_wait_share(root: Path, batch_size: int, workers: int, steps: int) -> tuple[float, float]:
    """(share of step time waiting for the next batch, images/s) of bf16 channels_last training
    fed by the real loader with ``workers`` processes."""
    from covidxr.models.module import XRayClassifier

    device = torch.device("cuda")
    dm = RadiographyDataModule(
        root, image_size=224, batch_size=batch_size, num_workers=workers, pin_memory=True,
        persistent_workers=True, train_augmentations=load_augmentations("default"),
    )  # fmt: skip
    dm.setup("fit")
    model = XRayClassifier(channels_last=True).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    waited = total = 0.0
    batches = iter(itertools.cycle(dm.train_dataloader()))
    for i in range(steps + 3):
        begin = time.perf_counter()
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        got = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        if i >= 3:
            waited += got - begin
            total += time.perf_counter() - begin
    return waited / total, batch_size * steps / total


def bench_gpu(root: Path | None, batch_size: int, steps: int) -> int:
    """One table: the GPU training path against NVIDIA's published ResNet50 AMP figure."""
    console = Console()
    if not torch.cuda.is_available():
        console.print("error: covidxr-bench gpu needs a CUDA GPU; none is visible here.")
        return 2
    table = Table(
        title=f"ResNet50 training on {torch.cuda.get_device_name()}, 224 px, batch {batch_size}"
    )
    for column in ("setting", "images/s", "peak GiB"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    variants = [
        ("fp32", False, False, False),
        ("bf16-mixed", True, False, False),
        ("bf16 + channels_last", True, True, False),
        ("bf16 + channels_last + compile", True, True, True),
    ]
    for name, bf16, channels_last, compiled in variants:
        rate, peak = _gpu_steps_per_second(batch_size, 224, steps, bf16, channels_last, compiled)
        table.add_row(name, f"{rate:,.0f}", f"{peak:.1f}")
    root = root or real_data_dir()
    if root is not None:
        for workers in (4, 8, 16):
            share, rate = _data_wait_share(root, batch_size, workers, steps)
            table.add_row(
                f"real loader, {workers} workers: {share:.1%} waiting", f"{rate:,.0f}", ""
            )
    console.print(table)
    console.print("Reference: NVIDIA's published ResNet50 AMP training, one A100: 2,470 img/s.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covidxr-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_data = sub.add_parser("data", help="input pipeline images/s against ImageFolder + PIL")
    p_data.add_argument("--root", type=Path, default=None, help="dataset (default: real set)")
    p_data.add_argument("--images", type=int, default=1024, help="images to read (1024)")
    p_data.add_argument("--image-size", type=int, default=224)
    p_data.add_argument("--batch-size", type=int, default=32)
    p_train = sub.add_parser("train", help="Trainer images/s against a plain PyTorch loop")
    p_train.add_argument("--image-size", type=int, default=64)
    p_train.add_argument("--batch-size", type=int, default=16)
    p_train.add_argument("--steps", type=int, default=12, help="timed steps per round (12)")
    p_train.add_argument("--rounds", type=int, default=2, help="interleaved rounds (2)")
    p_gpu = sub.add_parser("gpu", help="GPU training images/s, data wait and memory (CUDA)")
    p_gpu.add_argument("--root", type=Path, default=None, help="real data for the loader rows")
    p_gpu.add_argument("--batch-size", type=int, default=256)
    p_gpu.add_argument("--steps", type=int, default=30, help="timed steps per setting (30)")
    args = parser.parse_args(argv)
    if args.command == "gpu":
        return bench_gpu(args.root, args.batch_size, args.steps)
    if args.command == "data":
        bench_data(args.root, args.images, args.image_size, args.batch_size)
    else:
        bench_train(args.image_size, args.batch_size, args.steps, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
