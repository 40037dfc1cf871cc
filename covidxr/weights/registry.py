"""The registry of ResNet50 starting points: one entry of data per weight, the single source.

As in timm's ``pretrained_cfg`` and torchvision's weights enums, a weight is data, not code. Its
entry says where the file is published and its hash, the input normalisation it was trained with,
how to undo the publisher's checkpoint format (``CheckpointFormat``), and, for the reference
study's ten, the study's name and published numbers. Everything else reads it from here: the
``backbone`` config group (``covidxr.cli.register_configs``), the ``paper_table`` sweep,
``covidxr-weights``, ``covidxr-report`` and the tests. Adding a weight is adding an entry below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from covidxr.utils.errors import UserError

#: torchvision's ImageNet statistics: what most of the weights below were trained with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: The study's metric names, in the order of its table.
PAPER_METRICS = ("acc", "precision", "sensitivity", "f1", "specificity")


class WeightsError(UserError, ValueError):
    """Weights cannot be used; the message names the key or file, the reason and the fix."""


@dataclass(frozen=True)
class CheckpointFormat:
    """How a publisher saved a ResNet50, as data: what to undo to get torchvision's trunk keys.

    Every tensor of a file is either dropped by ``drop_prefixes`` or loaded; nothing is skipped
    silently. ``input_channels=1``: the first convolution was trained on one grey channel; its
    kernel is spread over the three identical grey channels covidxr feeds (divided by 3), which
    computes exactly the publisher's function.
    """

    name: str
    state_dict_key: str | None = None  # top-level key holding the state_dict; None: plain
    drop_prefixes: tuple[str, ...] = ()  # keys (as in the file) that are not part of the trunk
    strip_prefix: str = ""  # removed from every remaining key; a key without it is an error
    input_channels: int = 3


TORCHVISION = CheckpointFormat("torchvision", drop_prefixes=("fc.",))
# MoCo: the query encoder is the network; its head, the key encoder and the queue are not.
MOCO_V1 = CheckpointFormat(
    "moco_v1",
    state_dict_key="state_dict",
    drop_prefixes=("module.encoder_q.fc.", "module.encoder_k.", "module.queue"),
    strip_prefix="module.encoder_q.",
)
MOCO_V2 = replace(MOCO_V1, name="moco_v2")  # same layout, an MLP head (fc.0, fc.2) instead
NEWT_SUPERVISED = CheckpointFormat(
    "newt_supervised", state_dict_key="state_dict", drop_prefixes=("fc.",)
)
NEWT_SWAV = CheckpointFormat(
    "newt_swav",
    state_dict_key="state_dict",
    drop_prefixes=("module.projection_head.", "module.prototypes."),
    strip_prefix="module.",
)
# BenchmarkTransferLearning (Zenodo 5205234): a Linear + Sigmoid multi-label head at fc.0.
BENCHMARK_TRANSFER = CheckpointFormat(
    "benchmark_transfer", state_dict_key="state_dict", drop_prefixes=("fc.",)
)
BENCHMARK_TRANSFER_DP = replace(
    BENCHMARK_TRANSFER,
    name="benchmark_transfer_dataparallel",
    drop_prefixes=("module.fc.",),
    strip_prefix="module.",
)
# TorchXRayVision ResNet: a plain torchvision state_dict, one-channel conv1, an 18-pathology fc.
TORCHXRAYVISION = CheckpointFormat("torchxrayvision", drop_prefixes=("fc.",), input_channels=1)

ZENODO = "https://zenodo.org/record/5205234/files/{}?download=1"
ZENODO_CITATION = (
    "Hosseinzadeh Taher et al., A Systematic Benchmarking Analysis of Transfer Learning for "
    "Medical Image Analysis, DART 2021"
)
ZENODO_SOURCE = "MR-HosseinzadehTaher/BenchmarkTransferLearning (Zenodo record 5205234)"
MOCO_CITATION = (
    "He et al., Momentum Contrast for Unsupervised Visual Representation Learning, CVPR 2020; "
    "Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020"
)
NEWT_CITATION = (
    "Van Horn et al., Benchmarking Representation Learning for Natural World Image Collections, "
    "CVPR 2021"
)
NEWT_STEPS = (
    "The iNat2021 weights are published only inside one 5.7 GB archive on a Box share "
    "(visipedia/newt, benchmark/README.md, 'pretrained models'). Download that archive in a "
    "browser, unpack it, then run:\n    covidxr-weights import {key} <unpacked folder>/{file}\n"
    "or point a run at the file directly: backbone={key} backbone.path=<file>."
)


#: For publishers that give no licence with their weights: ask them before shipping a model.
UNSTATED = "not stated with the weights: ask the publisher before shipping a model built on them"


@dataclass(frozen=True)
class WeightSpec:
    """One ResNet50 starting point: where it comes from and how to read it.

    ``format=None`` loads nothing (random initialisation). ``requires_path``: the file is the
    user's own (``backbone=file backbone.path=...``), there is nothing to download.
    """

    key: str
    paper_name: str
    description: str
    source: str
    format: CheckpointFormat | None
    #: The terms the publisher gives for the weights: a user shipping a model must know them.
    licence: str
    citation: str = ""
    url: str | None = None  # direct download; None: a manual step (``manual_steps``)
    file_name: str | None = None
    published_hash: str | None = None  # "sha256:<prefix>" or "md5:<prefix>"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    native_size: int = 224  # the input side it was trained at
    manual_steps: str | None = None
    requires_path: bool = False
    #: The reference study's validation results (%), keyed by PAPER_METRICS; None: not in it.
    paper_results: Mapping[str, float] | None = field(default=None, hash=False)

    @property
    def in_study(self) -> bool:
        return self.paper_results is not None

    @property
    def downloadable(self) -> bool:
        return self.url is not None

    @property
    def loads_file(self) -> bool:
        return self.format is not None

    def instructions(self) -> str:
        """How a user gets this file by hand (always possible)."""
        if not self.loads_file:
            return f"backbone={self.key} loads no file."
        if self.manual_steps:
            return self.manual_steps.format(key=self.key, file=self.file_name)
        if self.requires_path:
            return f"Give the file with backbone={self.key} backbone.path=/path/to/resnet50.pth."
        return (
            f"Download {self.url} yourself (e.g. `curl -L -o {self.file_name} '{self.url}'`) and "
            f"run `covidxr-weights import {self.key} {self.file_name}`."
        )

    def config(self) -> dict[str, Any]:
        """The ``backbone`` config group entry: what a run records and the model receives."""
        return {
            "key": self.key,
            "path": "???" if self.requires_path else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "native_size": self.native_size,
            "licence": self.licence,
        }


def _results(*values: float) -> Mapping[str, float]:
    return MappingProxyType(dict(zip(PAPER_METRICS, values, strict=True)))


def _zenodo(key: str, paper_name: str, file_name: str, description: str, **kwargs) -> WeightSpec:
    return WeightSpec(
        key=key,
        paper_name=paper_name,
        description=description,
        citation=ZENODO_CITATION,
        source=ZENODO_SOURCE,
        url=ZENODO.format(file_name),
        file_name=file_name,
        licence=UNSTATED,
        **{"format": BENCHMARK_TRANSFER, **kwargs},
    )


def _newt(key: str, paper_name: str, file_name: str, description: str, **kwargs) -> WeightSpec:
    return WeightSpec(
        key=key,
        paper_name=paper_name,
        description=description,
        citation=NEWT_CITATION,
        source="visipedia/newt (Box archive, manual download)",
        file_name=file_name,
        manual_steps=NEWT_STEPS,
        licence=UNSTATED,
        **{"format": NEWT_SUPERVISED, **kwargs},
    )


def _moco(key: str, folder: str, md5: str, **kwargs) -> WeightSpec:
    return WeightSpec(
        key=key,
        citation=MOCO_CITATION,
        source="facebookresearch/moco",
        url=f"https://dl.fbaipublicfiles.com/moco/moco_checkpoints/{folder}/{folder}_pretrain.pth.tar",
        file_name=f"{folder}_pretrain.pth.tar",
        published_hash=f"md5:{md5}",
        licence="CC-BY-NC 4.0 (non-commercial use only; facebookresearch/moco)",
        **kwargs,
    )


SPECS: tuple[WeightSpec, ...] = (
    WeightSpec(
        key="random",
        paper_name="Random init",
        description="torchvision's random initialisation: the no-transfer baseline",
        source="torchvision",
        format=None,
        licence="none (no pretrained weights)",
    ),
    WeightSpec(
        key="file",
        paper_name="Local file",
        description="a local torchvision ResNet50 state_dict (fc.* is dropped)",
        source="local",
        format=TORCHVISION,
        licence="the file's own",
        requires_path=True,
    ),
    WeightSpec(
        key="imagenet",
        paper_name="ImageNet",
        description="Supervised ImageNet-1k (torchvision IMAGENET1K_V1)",
        citation="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        source="pytorch/vision",
        format=TORCHVISION,
        licence="BSD-3-Clause (torchvision); trained on ImageNet, whose terms restrict its data "
        "to non-commercial research",
        url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        file_name="resnet50-0676ba61.pth",
        published_hash="sha256:0676ba61",
        paper_results=_results(82.24, 83.94, 79.53, 81.68, 84.93),
    ),
    _moco(
        "moco_v1",
        "moco_v1_200ep",
        "b251726a",
        paper_name="MoCo_v1",
        description="MoCo v1, ImageNet, 200 epochs",
        format=MOCO_V1,
        paper_results=_results(93.53, 94.11, 92.81, 93.45, 94.25),
    ),
    _moco(
        "moco_v2",
        "moco_v2_800ep",
        "a04e12f8",
        paper_name="MoCo_v2",
        description="MoCo v2, ImageNet, 800 epochs",
        format=MOCO_V2,
        paper_results=_results(81.35, 79.74, 83.82, 81.73, 78.90),
    ),
    _newt(
        "inat2021_sup",
        "iNat2021_Supervised",
        "inat2021_supervised_large.pth.tar",
        "Supervised on iNat2021 (10,000 species), from ImageNet weights",
        paper_results=_results(95.66, 96.35, 94.88, 95.61, 96.44),
    ),
    _newt(
        "inat2021_sup_scratch",
        "iNat2021_Supervised_From_Scratch",
        "inat2021_supervised_large_from_scratch.pth.tar",
        "Supervised on iNat2021 (10,000 species), from random init",
        paper_results=_results(97.04, 96.96, 97.10, 97.03, 96.99),
    ),
    _newt(
        "inat2021_mini_swav_1k",
        "iNat2021_Mini_SwAV_1k",
        "inat2021_swav_mini_1000_ep.pth",
        "SwAV self-supervised on iNat2021-mini, 1,000 epochs (the study's best)",
        format=NEWT_SWAV,
        paper_results=_results(99.17, 99.31, 99.03, 99.17, 99.32),
    ),
    _zenodo(
        "chestxray14",
        "ChestX-ray14",
        "chestxray14.pth.tar",
        "Supervised on ChestX-ray14",
        paper_results=_results(97.66, 97.91, 97.37, 97.64, 97.95),
    ),
    _zenodo(
        "chexpert",
        "ChexPert",
        "chexpert.pth.tar",
        "Supervised on CheXpert",
        format=BENCHMARK_TRANSFER_DP,
        paper_results=_results(98.49, 98.61, 98.34, 98.48, 98.63),
    ),
    _zenodo(
        "imagenet_chestxray14",
        "ImageNet_ChestX-ray14",
        "ImageNet_chestxray14.pth.tar",
        "ImageNet, then supervised on ChestX-ray14",
        paper_results=_results(98.21, 99.02, 97.37, 98.19, 99.04),
    ),
    _zenodo(
        "imagenet_chexpert",
        "ImageNet_ChexPert",
        "ImageNet_chexpert.pth.tar",
        "ImageNet, then supervised on CheXpert",
        paper_results=_results(96.01, 96.50, 95.44, 95.97, 96.58),
    ),
    WeightSpec(
        key="xrv_resnet50_res512_all",
        paper_name="TorchXRayVision resnet50-res512-all",
        description="Supervised on PadChest, NIH, RSNA, SIIM and VinDr chest X-rays at 512 px "
        "(18 pathologies; one grey input channel)",
        citation="Cohen et al., TorchXRayVision: A library of chest X-ray datasets and models, "
        "MIDL 2022",
        source="mlmed/torchxrayvision (GitHub release v1)",
        format=TORCHXRAYVISION,
        licence="Apache-2.0 (mlmed/torchxrayvision)",
        url="https://github.com/mlmed/torchxrayvision/releases/download/v1/"
        "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
        file_name="pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
        # Its own scaling of 0..255 grey to [-1024, 1024]: (x/255 - 0.5) * 2048.
        mean=(0.5, 0.5, 0.5),
        std=(1 / 2048, 1 / 2048, 1 / 2048),
        native_size=512,
    ),
)
REGISTRY: dict[str, WeightSpec] = {spec.key: spec for spec in SPECS}


def get_spec(key: str) -> WeightSpec:
    """A publisher's entry (``covidxr.weights.local.find_spec`` also knows the weights made
    here)."""
    if key not in REGISTRY:
        raise WeightsError(f"Unknown backbone {key!r}: choose one of {list(REGISTRY)}.")
    return REGISTRY[key]


def study_keys() -> list[str]:
    """The reference study's ten weights, in registry order (the ``paper_table`` sweep)."""
    return [spec.key for spec in REGISTRY.values() if spec.in_study]


def downloadable_keys() -> list[str]:
    """Weights that come from a publisher (``covidxr-weights fetch all``)."""
    return [spec.key for spec in REGISTRY.values() if spec.file_name]
