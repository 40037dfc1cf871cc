"""Pretraining throughput: ``covidxr-pretrain``'s module in the Lightning Trainer against the
plain lightly + PyTorch MoCo v2 loop of lightly's own examples, on the same trunk and batches."""

from __future__ import annotations

import copy
import time

import torch
from hydra.utils import instantiate
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from covidxr.benchmarks.training import race, timed_fit
from covidxr.data.loading.transforms import NormalizeToRGB
from covidxr.models.backbone import NUM_FEATURES, resnet50_trunk
from covidxr.paths import CONF_DIR
from covidxr.pretraining.module import SelfSupervised
from covidxr.weights.registry import IMAGENET_MEAN, IMAGENET_STD

Batches = list[tuple[list[torch.Tensor], torch.Tensor]]


def _configured() -> tuple[DictConfig, DictConfig]:
    """covidxr-pretrain's MoCo v2 settings and its SGD, as conf/ set them: both sides use them."""
    method = OmegaConf.load(CONF_DIR / "ssl" / "moco_v2.yaml").method
    optimizer = OmegaConf.merge(
        OmegaConf.load(CONF_DIR / "optimizer" / "sgd.yaml"),
        OmegaConf.load(CONF_DIR / "pretrain.yaml").optimizer,
    )
    return method, optimizer


def _trainer_rate(batches: Batches, warmup: int) -> float:
    method, optimizer = _configured()
    backbone = {"key": "random", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    module = SelfSupervised(instantiate(method), backbone, instantiate(optimizer))
    return timed_fit(module, batches, warmup)


def _plain_rate(batches: Batches, warmup: int) -> float:
    """lightly's MoCo example as a user writes it: trunk, projection head, momentum copies,
    NTXentLoss with a memory bank, SGD, the momentum on a cosine schedule."""
    method, sgd = _configured()
    backbone = resnet50_trunk()
    head = MoCoProjectionHead(NUM_FEATURES, method.hidden_dim, method.projection_dim)
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    memory_bank = (method.queue_size, method.projection_dim)
    criterion = NTXentLoss(method.temperature, memory_bank_size=memory_bank)
    normalize = NormalizeToRGB(IMAGENET_MEAN, IMAGENET_STD)
    optimizer = torch.optim.SGD(
        [*backbone.parameters(), *head.parameters()],
        lr=sgd.lr,
        momentum=sgd.momentum,
        nesterov=sgd.nesterov,
        weight_decay=sgd.weight_decay,
    )
    start = 0.0
    for step, (views, _) in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        momentum = cosine_schedule(step, len(batches), method.momentum, 1.0)
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
