"""Self-supervised methods as lightly builds them: its heads, losses, memory bank and momentum
updates, around covidxr's ResNet50 trunk. A method is one ``ssl=<name>`` config (``conf/ssl/``);
adding one is a class here with ``loss`` and a config file.

Each method owns what it adds to the trunk (heads, momentum encoder, queue); ``trunk`` is the
network that is kept. The momentum encoder is part of the module's state_dict, and the queue,
which lightly keeps out of it, is carried in checkpoints by ``SelfSupervised``, so a resumed run
continues with both.
"""

from __future__ import annotations

import copy
import math

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    MoCoProjectionHead,
)
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from covidxr.models.backbone import NUM_FEATURES
from covidxr.utils.errors import ConfigError


class Method(nn.Module):
    """What a method adds to the trunk, and its loss on two views."""

    name = "method"
    #: Batch norm in the trunk (and heads) needs at least this many images per batch.
    min_batch_size = 2

    def attach(self, trunk: nn.Module) -> None:
        """Build the parts that copy the trunk (momentum encoders), once it has its weights."""

    def loss(self, trunk: nn.Module, views: list[torch.Tensor], progress: float) -> torch.Tensor:
        """``views``: normalised batches, one per view; ``progress``: 0 at the first step, 1 at
        the last (momentum schedules)."""
        raise NotImplementedError

    def check(self, images: int, batch_size: int) -> None:
        """One line before any compute when the data cannot train this method."""
        if batch_size < self.min_batch_size:
            raise ConfigError(
                f"data.batch_size={batch_size} is too small for {self.name}: it needs at least "
                f"{self.min_batch_size} images per batch (batch norm)."
            )

    def settings(self) -> dict[str, object]:
        """What the passport records of this method."""
        return {}

    def uninformative_loss(self) -> float | None:
        """The loss of an embedding that tells no image from another (a collapsed trunk), for
        methods whose loss shows it; None where it cannot (BYOL's trivial agreement)."""
        return None


class MomentumMethod(Method):
    """A method with a momentum copy of the trunk and of its ``projection_head``."""

    projection_head: nn.Module
    momentum: float

    def attach(self, trunk: nn.Module) -> None:
        self.trunk_momentum = copy.deepcopy(trunk)
        self.head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.trunk_momentum)
        deactivate_requires_grad(self.head_momentum)

    def follow(self, trunk: nn.Module, progress: float) -> None:
        """Move the momentum copies towards the trained networks; the momentum rises from
        ``self.momentum`` to 1 along a cosine over the run."""
        momentum = cosine_schedule(int(progress * 1000), 1000, self.momentum, 1.0)
        update_momentum(trunk, self.trunk_momentum, momentum)
        update_momentum(self.projection_head, self.head_momentum, momentum)


class MoCoV2(MomentumMethod):
    """MoCo v2 (Chen et al. 2020): a query encoder, its momentum copy as the key encoder, an MLP
    projection, InfoNCE against a queue of past keys (lightly's ``NTXentLoss`` memory bank);
    keys are computed on a shuffled batch so batch norm cannot give the pair away."""

    name = "moco_v2"

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 4096,
        projection_dim: int = 128,
        hidden_dim: int = 2048,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.queue_size, self.momentum, self.temperature = queue_size, momentum, temperature
        self.projection_head = MoCoProjectionHead(NUM_FEATURES, hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature, memory_bank_size=(queue_size, projection_dim))

    def check(self, images: int, batch_size: int) -> None:
        super().check(images, batch_size)
        if self.queue_size > images:
            raise ConfigError(
                f"ssl.method.queue_size={self.queue_size} is larger than the {images} images to "
                f"pretrain on: the queue would hold stale copies of the same images. Set "
                f"ssl.method.queue_size={max(batch_size, images // 2)} or less."
            )

    def loss(self, trunk: nn.Module, views: list[torch.Tensor], progress: float) -> torch.Tensor:
        self.follow(trunk, progress)
        query = self.projection_head(trunk(views[0]))
        with torch.no_grad():
            shuffled, order = batch_shuffle(views[1])
            key = batch_unshuffle(self.head_momentum(self.trunk_momentum(shuffled)), order)
        return self.criterion(query, key)

    def settings(self) -> dict[str, object]:
        return {"temperature": self.temperature, "queue_size": self.queue_size,
                "momentum": self.momentum}  # fmt: skip

    def uninformative_loss(self) -> float:
        """InfoNCE over the positive and ``queue_size`` negatives, all equally similar."""
        return math.log(self.queue_size + 1)


class BYOL(MomentumMethod):
    """BYOL (Grill et al. 2020): no negatives; an online network with a predictor regresses the
    projection of a momentum target network, symmetrised over the two views."""

    name = "byol"

    def __init__(
        self,
        projection_dim: int = 256,
        hidden_dim: int = 4096,
        momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.momentum = momentum
        self.projection_head = BYOLProjectionHead(NUM_FEATURES, hidden_dim, projection_dim)
        self.prediction_head = BYOLPredictionHead(projection_dim, hidden_dim, projection_dim)
        self.criterion = NegativeCosineSimilarity()

    def loss(self, trunk: nn.Module, views: list[torch.Tensor], progress: float) -> torch.Tensor:
        self.follow(trunk, progress)
        online = [self.prediction_head(self.projection_head(trunk(v))) for v in views[:2]]
        with torch.no_grad():
            target = [self.head_momentum(self.trunk_momentum(v)) for v in views[:2]]
        return 0.5 * (self.criterion(online[0], target[1]) + self.criterion(online[1], target[0]))

    def settings(self) -> dict[str, object]:
        return {"momentum": self.momentum}
