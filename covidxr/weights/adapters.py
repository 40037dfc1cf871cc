"""Undo a publisher's checkpoint format, from the data in its ``CheckpointFormat``.

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
Loading is strict: every tensor of a ResNet50 trunk must be matched and nothing may be left over.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from covidxr.utils.io import read_checkpoint
from covidxr.weights.registry import CheckpointFormat, WeightsError

log = logging.getLogger(__name__)


def extract_trunk_state(
    checkpoint: object, fmt: CheckpointFormat, source: str
) -> dict[str, torch.Tensor]:
    """The trunk's tensors, named as in torchvision's ResNet50, from a file in format ``fmt``."""
    state = checkpoint
    if fmt.state_dict_key is not None:
        if not isinstance(checkpoint, dict) or fmt.state_dict_key not in checkpoint:
            found = (
                sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
            )
            raise WeightsError(
                f"{source} is not a {fmt.name}-format checkpoint: expected a top-level "
                f"{fmt.state_dict_key!r} entry, found {found}."
            )
        state = checkpoint[fmt.state_dict_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source} does not hold a state_dict of tensors.")
    kept = {k: v for k, v in state.items() if not k.startswith(fmt.drop_prefixes or ("\0",))}
    stray = [k for k in kept if not k.startswith(fmt.strip_prefix)]
    if stray:
        raise WeightsError(
            f"{source}: {len(stray)} key(s) lack the prefix {fmt.strip_prefix!r} of {fmt.name}-"
            f"format checkpoints, e.g. {stray[:3]}. Is it the right file for this backbone?"
        )
    log.info(
        "%s: %d tensors, %d dropped (%s)",
        source,
        len(state),
        len(state) - len(kept),
        ", ".join(fmt.drop_prefixes) or "none",
    )
    trunk = {k[len(fmt.strip_prefix) :]: v for k, v in kept.items()}
    return spread_grey_kernel(trunk, fmt, source)


def spread_grey_kernel(
    state: dict[str, torch.Tensor], fmt: CheckpointFormat, source: str
) -> dict[str, torch.Tensor]:
    """A one-channel ``conv1`` as a three-channel one that gives the same output on grey RGB.

    covidxr feeds three identical grey channels, so ``w/3`` on each channel sums to ``w * x``.
    """
    if fmt.input_channels == 3:
        return state
    kernel = state.get("conv1.weight")
    if kernel is None or kernel.shape[1] != fmt.input_channels:
        shape = None if kernel is None else list(kernel.shape)
        raise WeightsError(
            f"{source}: a {fmt.name}-format file has a {fmt.input_channels}-channel conv1.weight, "
            f"this one has {shape}. Is it the right file for this backbone?"
        )
    spread = kernel.sum(dim=1, keepdim=True).repeat(1, 3, 1, 1) / 3
    return {**state, "conv1.weight": spread}


def load_trunk_state(trunk: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly: every trunk tensor must be matched, nothing may be left over.

    BatchNorm ``num_batches_tracked`` counters are the one exception: files saved before PyTorch
    0.4.1 (torchvision's ImageNet ResNet50) have none, and PyTorch itself sets them to 0.
    """
    expected = trunk.state_dict()
    counters = {k for k in expected if k.endswith("num_batches_tracked")}
    absent_counters = counters - set(state)
    missing = sorted(set(expected) - set(state) - absent_counters)
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f"{source} does not fit a ResNet50 trunk ({len(expected)} tensors): "
            f"{len(missing)} missing {missing[:4]}, {len(unexpected)} unexpected "
            f"{unexpected[:4]}, {len(wrong_shape)} of another shape {wrong_shape[:4]}."
        )
    state = {**state, **{k: torch.zeros((), dtype=torch.long) for k in absent_counters}}
    trunk.load_state_dict(state, strict=True)
    note = (
        f" ({len(absent_counters)} BatchNorm counters absent, set to 0)" if absent_counters else ""
    )
    log.info("Loaded all %d backbone tensors from %s%s", len(expected), source, note)


def load_weights_file(trunk: nn.Module, fmt: CheckpointFormat, path: str | os.PathLike) -> None:
    """Read ``path`` in format ``fmt`` into ``trunk``."""
    checkpoint = read_checkpoint(path, WeightsError, what="weights file")
    load_trunk_state(trunk, extract_trunk_state(checkpoint, fmt, str(path)), f"{fmt.name}: {path}")
