"""The registry of pretrained ResNet50 weights: where each comes from and how to undo its format.

A weight is data, not code (as in timm's ``pretrained_cfg``): adding one is adding a ``WeightSpec``.
Each spec says where the file is published, its published hash if any, and how to turn the
publisher's checkpoint into a torchvision ResNet50 trunk state_dict: the top-level key holding the
state_dict, the key prefixes to drop (classifier heads, momentum encoders, projection heads), and
the prefix to strip from every remaining key. Every tensor of the file is then either dropped by
name or loaded; nothing is skipped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ZENODO = "https://zenodo.org/record/5205234/files/{}?download=1"
NEWT_STEPS = (
    "The iNat2021 weights are published only inside one 5.7 GB archive on a Box share "
    "(visipedia/newt, benchmark/README.md, 'pretrained models'). Download that archive in a "
    "browser, unpack it, then run:\n    covidxr-weights import {key} <unpacked folder>/{file}\n"
    "or point a run at the file directly: backbone={key} backbone.path=<file>."
)


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained ResNet50 and how to read its checkpoint."""

    key: str
    paper_name: str
    description: str
    citation: str
    source: str  # a human-readable origin: a repository or record
    url: str | None = None  # direct download; None: a manual step (see ``manual_steps``)
    file_name: str | None = None
    published_hash: str | None = None  # "sha256:<prefix>" or "md5:<prefix>"
    state_dict_key: str | None = None  # top-level key holding the state_dict; None: plain
    drop_prefixes: tuple[str, ...] = ()  # keys (as in the file) that are not part of the trunk
    strip_prefix: str = ""  # removed from every remaining key; a key without it is an error
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    manual_steps: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def downloadable(self) -> bool:
        return self.url is not None

    def instructions(self) -> str:
        """How a user gets this file by hand (always possible)."""
        if self.manual_steps:
            return self.manual_steps.format(key=self.key, file=self.file_name)
        return (
            f"Download {self.url} yourself (e.g. `curl -L -o {self.file_name} '{self.url}'`) and "
            f"run `covidxr-weights import {self.key} {self.file_name}`."
        )


def _zenodo(
    key: str, paper_name: str, file_name: str, description: str, strip: str = ""
) -> WeightSpec:
    return WeightSpec(
        key=key,
        paper_name=paper_name,
        description=description,
        citation=(
            "Hosseinzadeh Taher et al., A Systematic Benchmarking Analysis of Transfer Learning "
            "for Medical Image Analysis, DART 2021"
        ),
        source="MR-HosseinzadehTaher/BenchmarkTransferLearning (Zenodo record 5205234)",
        url=ZENODO.format(file_name),
        file_name=file_name,
        state_dict_key="state_dict",
        drop_prefixes=(f"{strip}fc.",),  # Linear + Sigmoid multi-label head
        strip_prefix=strip,
    )


def _newt(key: str, paper_name: str, file_name: str, description: str, **kwargs) -> WeightSpec:
    return WeightSpec(
        key=key,
        paper_name=paper_name,
        description=description,
        citation="Van Horn et al., Benchmarking Representation Learning for Natural World Image "
        "Collections, CVPR 2021",
        source="visipedia/newt (Box archive, manual download)",
        file_name=file_name,
        state_dict_key="state_dict",
        manual_steps=NEWT_STEPS,
        **kwargs,
    )


def _moco(key: str, paper_name: str, folder: str, md5: str, description: str) -> WeightSpec:
    return WeightSpec(
        key=key,
        paper_name=paper_name,
        description=description,
        citation="He et al., Momentum Contrast for Unsupervised Visual Representation Learning, "
        "CVPR 2020; Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020",
        source="facebookresearch/moco",
        url=f"https://dl.fbaipublicfiles.com/moco/moco_checkpoints/{folder}/{folder}_pretrain.pth.tar",
        file_name=f"{folder}_pretrain.pth.tar",
        published_hash=f"md5:{md5}",
        state_dict_key="state_dict",
        # The query encoder is the network; its head, the key encoder and the queue are not.
        drop_prefixes=("module.encoder_q.fc.", "module.encoder_k.", "module.queue"),
        strip_prefix="module.encoder_q.",
    )


REGISTRY: dict[str, WeightSpec] = {
    spec.key: spec
    for spec in (
        WeightSpec(
            key="imagenet",
            paper_name="ImageNet",
            description="Supervised ImageNet-1k (torchvision IMAGENET1K_V1)",
            citation="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
            source="pytorch/vision",
            url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
            file_name="resnet50-0676ba61.pth",
            published_hash="sha256:0676ba61",
            drop_prefixes=("fc.",),
        ),
        _moco("moco_v1", "MoCo_v1", "moco_v1_200ep", "b251726a", "MoCo v1, ImageNet, 200 epochs"),
        _moco("moco_v2", "MoCo_v2", "moco_v2_800ep", "a04e12f8", "MoCo v2, ImageNet, 800 epochs"),
        _newt(
            "inat2021_sup",
            "iNat2021_Supervised",
            "inat2021_supervised_large.pth.tar",
            "Supervised on iNat2021 (10,000 species), from ImageNet weights",
            drop_prefixes=("fc.",),
        ),
        _newt(
            "inat2021_sup_scratch",
            "iNat2021_Supervised_From_Scratch",
            "inat2021_supervised_large_from_scratch.pth.tar",
            "Supervised on iNat2021 (10,000 species), from random init",
            drop_prefixes=("fc.",),
        ),
        _newt(
            "inat2021_mini_swav_1k",
            "iNat2021_Mini_SwAV_1k",
            "inat2021_swav_mini_1000_ep.pth",
            "SwAV self-supervised on iNat2021-mini, 1,000 epochs (the study's best)",
            drop_prefixes=("module.projection_head.", "module.prototypes."),
            strip_prefix="module.",
        ),
        _zenodo("chestxray14", "ChestX-ray14", "chestxray14.pth.tar", "Supervised on ChestX-ray14"),
        _zenodo(
            "chexpert", "ChexPert", "chexpert.pth.tar", "Supervised on CheXpert", strip="module."
        ),
        _zenodo(
            "imagenet_chestxray14",
            "ImageNet_ChestX-ray14",
            "ImageNet_chestxray14.pth.tar",
            "ImageNet, then supervised on ChestX-ray14",
        ),
        _zenodo(
            "imagenet_chexpert",
            "ImageNet_ChexPert",
            "ImageNet_chexpert.pth.tar",
            "ImageNet, then supervised on CheXpert",
        ),
    )
}
#: Backbone keys that are not downloads: torchvision's random init, and a local torchvision file.
SPECIAL_KEYS = ("random", "file")


class WeightsError(ValueError):
    """Weights cannot be used; the message names the key or file, the reason and the fix."""


def get_spec(key: str) -> WeightSpec:
    if key not in REGISTRY:
        raise WeightsError(f"Unknown backbone {key!r}: choose one of {[*SPECIAL_KEYS, *REGISTRY]}.")
    return REGISTRY[key]


def extract_trunk_state(
    checkpoint: object, spec: WeightSpec, source: str
) -> dict[str, torch.Tensor]:
    """Undo the publisher's format: the trunk's tensors, named as in torchvision's ResNet50."""
    state = checkpoint
    if spec.state_dict_key is not None:
        if not isinstance(checkpoint, dict) or spec.state_dict_key not in checkpoint:
            found = (
                sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
            )
            raise WeightsError(
                f"{source} is not a {spec.paper_name} checkpoint: expected a top-level "
                f"{spec.state_dict_key!r} entry, found {found}."
            )
        state = checkpoint[spec.state_dict_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source} does not hold a state_dict of tensors.")
    kept = {k: v for k, v in state.items() if not k.startswith(spec.drop_prefixes or ("\0",))}
    stray = [k for k in kept if not k.startswith(spec.strip_prefix)]
    if stray:
        raise WeightsError(
            f"{source}: {len(stray)} key(s) lack the prefix {spec.strip_prefix!r} of "
            f"{spec.paper_name} checkpoints, e.g. {stray[:3]}. Is it the right file for {spec.key}?"
        )
    log.info(
        "%s: %d tensors, %d dropped (%s)",
        source,
        len(state),
        len(state) - len(kept),
        ", ".join(spec.drop_prefixes) or "none",
    )
    return {k[len(spec.strip_prefix) :]: v for k, v in kept.items()}
