"""Pretraining throughput: ``covidxr-pretrain``'s module in the Lightning Trainer against the
plain lightly + PyTorch MoCo v2 loop of lightly's own examples, on the same trunk and batches."""

from __future__ import annotations

import copy
import time

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from rich.console import Console

from covidxr.benchmarks.training import race, timed_fit
from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.backbone import NUM_FEATURES, resnet50_trunk
from covidxr.pretraining.methods import MoCoV2
from covidxr.pretraining.module import SelfSupervised
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

#: MoCo v2 as conf/ssl/moco_v2.yaml and conf/pretrain.yaml set it.
QUEUE, TEMPERATURE, PROJECTION, HIDDEN, MOMENTUM, LR = 1024, 0.2, 128, 2048, 0.99, 0.06

Batches = list[tuple[list[torch.Tensor], torch.Tensor]]


def _sgd(params, lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)


def _trainer_rate(batches: Batches, warmup: int) -> float:
    backbone = {"key": "random", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    method = MoCoV2(TEMPERATURE, QUEUE, PROJECTION, HIDDEN, MOMENTUM)
    return timed_fit(SelfSupervised(method, backbone, _sgd), batches, warmup)


def _plain_rate(batches: Batches, warmup: int) -> float:
    """lightly's MoCo example as a user writes it: trunk, projection head, momentum copies,
    NTXentLoss with a memory bank, SGD, the momentum on a cosine schedule."""
    backbone, head = resnet50_trunk(), MoCoProjectionHead(NUM_FEATURES, HIDDEN, PROJECTION)
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NTXentLoss(TEMPERATURE, memory_bank_size=(QUEUE, PROJECTION))
    normalize = NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)
    optimizer = _sgd([*backbone.parameters(), *head.parameters()])
    start = 0.0
    for step, (views, _) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        momentum = cosine_schedule(step, len(batches), MOMENTUM, 1.0)
        update_momentum(backbone, backbone_momentum, momentum)
        update_momentum(head, head_momentum, momentum)
        query = head(backbone(normalize(views[0])))
        key = head_momentum(backbone_momentum(normalize(views[1]))).detach()
        loss = criterion(query, key)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    images = sum(len(labels) for _, labels in batches[warmup:])
    return images / (time.perf_counter() - start)


def bench_pretrain(
    image_size: int, batch_size: int, steps: int, rounds: int, console: Console, warmup: int = 3
) -> None:
    """MoCo v2 pretraining images/s (an image = its two views): covidxr's module in the Trainer
    against the plain loop, on the same preloaded uint8 views and threads, so the ratio is the
    framework's overhead (hooks, logging, the batch shuffle), not the view pipeline."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, 1, image_size, image_size)
    batches = [
        ([torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator) for _ in "qk"],
         torch.zeros(batch_size, dtype=torch.long))
        for _ in range(steps + warmup)
    ]  # fmt: skip
    race(
        f"MoCo v2 pretraining, {image_size} px, batch {batch_size}, {steps} steps",
        {"plain lightly + PyTorch loop": _plain_rate, "covidxr-pretrain module": _trainer_rate},
        batches,
        warmup,
        rounds,
        "ratio covidxr / plain",
        console,
    )
