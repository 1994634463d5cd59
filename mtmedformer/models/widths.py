"""Build a model whose MLP hidden widths and conv-block hidden channels are read from a state dict.

Aggregation by neuron matching with growth (``federated.matching.growth``) produces global models with more
MLP hidden units per transformer block, and more hidden channels per decoder conv block, than the configured
width. The architecture is otherwise the configured one and every parameter keeps its name, so such a state
dict loads into the configured model once these widths are set: :func:`fit_widths` swaps the affected layers
for wider (or narrower) ones.

Resizable places (nothing else is):

- every MONAI ``MLPBlock`` ``<p>``: ``<p>.linear1`` rows and ``<p>.linear2`` columns, from
  ``<p>.linear1.weight`` ``(F, d)``;
- every MONAI ``UnetResBlock`` / ``UnetBasicBlock`` ``<p>``: ``<p>.conv1`` output channels, ``<p>.norm1`` and
  ``<p>.conv2`` input channels, from ``<p>.conv1.conv.weight`` ``(C, C_in, k, k)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from monai.networks.blocks import MLPBlock, UnetBasicBlock, UnetResBlock
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.build import build_model
from mtmedformer.models.multitask import MultiTaskModel

logger = logging.getLogger(__name__)


def _linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    new = nn.Linear(in_features, out_features, bias=old.bias is not None)
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


def _conv(old: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(
        in_channels, out_channels, old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation,
        groups=old.groups, bias=old.bias is not None, padding_mode=old.padding_mode,
    )
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


def _norm(old: nn.Module, channels: int) -> nn.Module:
    if isinstance(old, _NormBase):  # BatchNorm / InstanceNorm, with or without affine and statistics
        new = type(old)(channels, eps=old.eps, momentum=old.momentum, affine=old.affine,
                        track_running_stats=old.track_running_stats)
        tensors = [t for t in (*old.parameters(), *old.buffers()) if t.is_floating_point()]
        return new.to(device=tensors[0].device, dtype=tensors[0].dtype) if tensors else new
    raise ValueError(f"cannot resize normalisation {type(old).__name__}: only batch/instance norm are supported")


def _width(state: Mapping[str, torch.Tensor], key: str) -> int:
    if key not in state:
        raise ValueError(f"the state dict lacks '{key}': it does not come from this model config")
    return int(state[key].shape[0])


def fit_widths(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Resize, in place, every MLP and conv-block hidden layer of ``model`` to the widths found in ``state``.

    Parameters
    ----------
    model
        A model built from the config that produced ``state`` (e.g. :func:`~mtmedformer.models.build_model`).
    state
        Its state dict, possibly with grown hidden widths.

    Returns
    -------
    dict[str, int]
        Module name -> new hidden width, for the modules that changed (empty when ``state`` has the
        configured widths). Resized layers get fresh weights: load ``state`` afterwards.

    Raises
    ------
    ValueError
        If ``state`` lacks a key that gives a width, or a block uses a normalisation that cannot be resized.
    """
    changed: dict[str, int] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, MLPBlock):
            width = _width(state, f"{prefix}linear1.weight")
            if width != module.linear1.out_features:
                module.linear1 = _linear(module.linear1, module.linear1.in_features, width)
                module.linear2 = _linear(module.linear2, width, module.linear2.out_features)
                changed[name] = width
        elif isinstance(module, UnetResBlock | UnetBasicBlock):
            conv1, conv2 = module.conv1.conv, module.conv2.conv
            width = _width(state, f"{prefix}conv1.conv.weight")
            if width != conv1.out_channels:
                module.conv1.conv = _conv(conv1, conv1.in_channels, width)
                module.norm1 = _norm(module.norm1, width)
                module.conv2.conv = _conv(conv2, width, conv2.out_channels)
                changed[name] = width
    if changed:
        logger.info("resized %d hidden layers to the widths of the state dict", len(changed))
    return changed


def build_model_for_state(
    cfg: ModelConfig, image_size: int, num_classes: int, state: Mapping[str, torch.Tensor]
) -> MultiTaskModel:
    """The configured model with the hidden widths of ``state`` (see :func:`fit_widths`), ``state`` loaded.

    Raises
    ------
    ValueError
        As :func:`~mtmedformer.models.build_model`, or if ``state`` lacks a width-giving key.
    RuntimeError
        From ``load_state_dict`` if another shape differs (the state dict comes from another config).
    """
    model = build_model(cfg, image_size, num_classes)
    fit_widths(model, state)
    model.load_state_dict(dict(state))
    return model
