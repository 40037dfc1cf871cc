"""Training throughput: the Lightning Trainer against a plain PyTorch loop (CPU), and the GPU
path (fp32, bf16, channels_last, compile; data-loading wait; peak memory)."""

from __future__ import annotations

import functools
import itertools
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from covidxr.data.loading.datamodule import RadiographyDataModule
from covidxr.data.phantoms.synthetic import generate_phantoms
from covidxr.models.module import XRayClassifier
from covidxr.utils.config import load_augmentations
from covidxr.utils.env import real_data_dir


class StepTimer(Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.end = time.perf_counter()


def timed_fit(model: LightningModule, batches: list, warmup: int) -> float:
    """Images/s of one Trainer epoch over preloaded ``(inputs, labels)`` batches, from batch
    ``warmup`` on (no validation, logging or checkpoints)."""
    timer = StepTimer(warmup)
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
    images = sum(len(labels) for _, labels in batches[warmup:])
    return images / (timer.end - timer.start)


def _trainer_rate(batches: list, warmup: int) -> float:
    model = XRayClassifier(optimizer=functools.partial(torch.optim.Adam, lr=1e-4))
    return timed_fit(model, batches, warmup)


def train_step(
    model: XRayClassifier,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    bf16: bool = False,
) -> None:
    """One plain PyTorch step on uint8 grey images, normalised the model's way."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _plain_rate(batches: list, warmup: int) -> float:
    model = XRayClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = 0.0
    for i, (images, labels) in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        train_step(model, optimizer, images, labels)
    images = sum(x.shape[0] for x, _ in batches[warmup:])
    return images / (time.perf_counter() - start)


def bench_train(
    image_size: int, batch_size: int, steps: int, rounds: int, console: Console, warmup: int = 3
) -> None:
    """Training images/s: a Trainer with covidxr's module against a plain PyTorch loop.

    Both see the same preloaded uint8 batches and normalise them the model's way, with the same
    model and thread count, so the ratio is the framework's overhead (hooks, metrics, logging),
    not data loading.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # 80% of each class is trained on: enough for every warm-up and timed step.
        per_class = math.ceil(batch_size * (steps + warmup) / 0.8 / 2) + 1
        root = generate_phantoms(Path(tmp) / "p", per_class=per_class, size=64)
        dm = RadiographyDataModule(root, image_size=image_size, batch_size=batch_size)
        dm.setup()
        loader = DataLoader(dm.datasets["train"], batch_size=batch_size, drop_last=True)
        batches = [(x, y) for x, y, _ in itertools.islice(loader, steps + warmup)]
    race(
        f"Training, {image_size} px, batch {batch_size}, {steps} timed steps",
        {"plain PyTorch loop": _plain_rate, "Lightning Trainer (covidxr)": _trainer_rate},
        batches,
        warmup,
        rounds,
        "ratio Trainer / plain",
        console,
    )


def race(
    title: str,
    contenders: dict[str, Callable[[list, int], float]],
    batches: list,
    warmup: int,
    rounds: int,
    ratio: str,
    console: Console,
) -> None:
    """Print each contender's images/s over the same batches, interleaved for ``rounds`` (best of
    each: the fairest figure on a shared machine), and the last one's ratio to the first."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, rate in contenders.items():
            rates[name].append(rate(batches, warmup))
    table = Table(title=title)
    table.add_column("images/s")
    table.add_column("best", justify="right")
    table.add_column("all rounds", justify="right")
    for name, figures in rates.items():
        table.add_row(name, f"{max(figures):.2f}", ", ".join(f"{r:.2f}" for r in figures))
    first, *_, last = (max(figures) for figures in rates.values())
    table.add_row(ratio, f"{last / first:.3f}", "", style="bold")
    console.print(table)
    console.print(f"torch threads: {torch.get_num_threads()}")


def _gpu_steps_per_second(
    batch_size: int, image_size: int, steps: int, bf16: bool, channels_last: bool, compiled: bool
) -> tuple[float, float]:
    """Training images/s on device-resident uint8 batches (no data loading) and peak GiB."""
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
        train_step(model, optimizer, images, labels, bf16)
    torch.cuda.synchronize()
    rate = batch_size * steps / (time.perf_counter() - start)
    return rate, torch.cuda.max_memory_allocated() / 2**30


def _data_wait_share(root: Path, batch_size: int, workers: int, steps: int) -> tuple[float, float]:
    """(share of step time waiting for the next batch, images/s) of bf16 channels_last training
    fed by the real loader with ``workers`` processes."""
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
        images, labels, _ = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device)
        got = time.perf_counter()
        train_step(model, optimizer, images, labels, bf16=True)
        torch.cuda.synchronize()
        if i >= 3:
            waited += got - begin
            total += time.perf_counter() - begin
    return waited / total, batch_size * steps / total


def bench_gpu(root: Path | None, batch_size: int, steps: int, console: Console) -> int:
    """One table: the GPU training path against NVIDIA's published ResNet50 AMP figure."""
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
