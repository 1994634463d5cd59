"""Tiny MTMedFormer models, random perturbations and output comparison for the matching tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from unittest import mock

import torch

from mtmedformer.config.model import DetectionConfig, ModelConfig
from mtmedformer.models import MultiTaskModel, build_model
from mtmedformer.models.presets import VitPreset

IMAGE_SIZE = 32
NUM_CLASSES = 2


def tiny_model(
    embed_dim: int = 32,
    num_heads: int = 4,
    depth: int = 2,
    norm: str = "batch",
    tasks: tuple[str, ...] = ("classification", "segmentation", "detection"),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    qkv_bias: bool = True,
    detection_stride: int = 4,
    cls_pool: str = "cls",
    cls_descriptors: bool = False,
) -> MultiTaskModel:
    """MTMedFormer at test size (the real assembly, with the ViT width patched below the presets), in eval
    mode, with every parameter and BatchNorm statistic randomised so that no symmetry is trivial."""
    cfg = ModelConfig(
        patch_size=8,
        cls_pool=cls_pool,
        cls_descriptors=cls_descriptors,
        mlp_ratio=2.0,
        qkv_bias=qkv_bias,
        tasks=tasks,
        seg_feature_size=2,
        decoder_norm=norm,
        detection=DetectionConfig(stride=detection_stride, feature_size=2),
    )
    torch.manual_seed(seed)
    with mock.patch("mtmedformer.models.mtmedformer.vit_dims", lambda _: VitPreset(embed_dim, num_heads, depth)):
        model = build_model(cfg, IMAGE_SIZE, NUM_CLASSES)
    model = model.to(dtype).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            noise = torch.randn(value.shape, generator=generator, dtype=torch.float64).to(dtype)
            if name.endswith("running_var"):
                value.copy_(0.5 + noise.abs())
            else:
                value.add_(0.3 * noise)
    return model


def images(batch: int = 2, dtype: torch.dtype = torch.float64, seed: int = 5) -> torch.Tensor:
    """``(B, 1, 32, 32)`` random images."""
    return torch.rand(batch, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def outputs(model: MultiTaskModel, state: Mapping[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every task output of ``model`` loaded with ``state`` on ``x``, flattened per task (detection dict
    concatenated)."""
    model.load_state_dict(dict(state))
    with torch.no_grad():
        raw: dict[str, Any] = model(x)
    flat = {}
    for task, value in raw.items():
        parts = value.values() if isinstance(value, dict) else [value]
        flat[task] = torch.cat([p.flatten() for p in parts])
    return flat


def max_relative_change(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """``max_task max|a - b| / max|a|``."""
    return max(float((a[t] - b[t]).abs().max() / a[t].abs().max().clamp_min(1e-30)) for t in a)


def noisy(state: Mapping[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    """``state`` plus Gaussian noise of ``scale`` times each tensor's RMS (integer buffers untouched)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in state.items():
        if value.is_floating_point():
            rms = value.double().pow(2).mean().sqrt()
            noise = torch.randn(value.shape, generator=generator, dtype=torch.float64)
            out[name] = (value.double() + scale * rms * noise).to(value.dtype)
        else:
            out[name] = value.clone()
    return out


def weighted_average(states: list[Mapping[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Coordinate-wise weighted average (FedAvg) of floating tensors; integer buffers from the first state."""
    total = sum(weights)
    out = {}
    for name, value in states[0].items():
        if value.is_floating_point():
            acc = sum(w * s[name].double() for w, s in zip(weights, states, strict=True)) / total
            out[name] = acc.to(value.dtype)
        else:
            out[name] = value.clone()
    return out
