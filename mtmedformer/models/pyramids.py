"""Adapters that turn an encoder's output into a bottleneck map and skip maps for a U-shaped decoder.

A pyramid owns the head-specific layers that prepare skips (each dense head has its own copy, so heads can be
enabled, trained and aggregated separately). Its ``forward(features, image)`` returns
``(bottleneck (B, C_b, H / s_b, W / s_b), {stride: skip (B, channels[stride], H / stride, W / stride)})`` for
every stride from ``out_stride`` up to ``bottleneck_stride / 2``.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import UnetrBasicBlock, UnetrPrUpBlock
from torch import nn

from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput, tokens_to_map


def _check_power_of_two(name: str, value: int) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of 2, got {value}")
    return int(math.log2(value))


def _image_block(channels: int, norm: str) -> UnetrBasicBlock:
    # UNETR's encoder1: a residual conv block on the full-resolution image, the stride-1 skip.
    return UnetrBasicBlock(
        spatial_dims=2, in_channels=1, out_channels=channels, kernel_size=3, stride=1, norm_name=norm, res_block=True
    )


def skip_strides(out_stride: int, bottleneck_stride: int) -> list[int]:
    """Return the skip strides ``[out_stride, 2 * out_stride, ..., bottleneck_stride / 2]`` (finest first)."""
    strides = []
    stride = out_stride
    while stride < bottleneck_stride:
        strides.append(stride)
        stride *= 2
    return strides


class ViTPyramid(nn.Module):
    """UNETR skip paths for a ViT (Hatamizadeh et al., WACV 2022), generalised to any power-of-2 patch size.

    With ``p = 2**L``, the bottleneck is the final token grid (stride ``p``, ``embed_dim`` channels). The skip at
    stride ``2**l`` (``1 <= l < L``) is hidden state ``l - 1`` (shallowest state for the finest stride), brought
    from stride ``p`` to ``2**l`` by a :class:`~monai.networks.blocks.UnetrPrUpBlock` (``L - l`` transposed
    convolutions) with ``feature_size * 2**l`` channels; the stride-1 skip is a conv block on the image with
    ``feature_size`` channels. For ``p = 16`` this is exactly UNETR's ``encoder1..encoder4``.

    Parameters
    ----------
    embed_dim
        Token width ``d``.
    patch_size
        ViT patch size ``p`` (power of 2).
    out_stride
        Finest stride the decoder reaches (power of 2, ``<= p``): 1 for segmentation, the detection stride for
        detection.
    feature_size
        Width unit: the stride-``s`` skip has ``feature_size * s`` channels. Default 16 (UNETR).
    norm
        MONAI norm name of the conv blocks (``"instance"`` or ``"batch"``). Default ``"instance"``.

    Raises
    ------
    ValueError
        If ``patch_size`` or ``out_stride`` is not a power of 2, ``out_stride > patch_size``, or a width < 1.
    """

    def __init__(
        self, embed_dim: int, patch_size: int, out_stride: int, feature_size: int = 16, norm: str = "instance"
    ) -> None:
        super().__init__()
        levels = _check_power_of_two("patch_size", patch_size)
        _check_power_of_two("out_stride", out_stride)
        if out_stride > patch_size:
            raise ValueError(f"out_stride {out_stride} must be <= patch_size {patch_size}")
        if embed_dim < 1 or feature_size < 1:
            raise ValueError(f"embed_dim and feature_size must be >= 1, got {embed_dim} and {feature_size}")
        self.bottleneck_stride = patch_size
        self.bottleneck_channels = embed_dim
        self.num_hidden_states = levels - 1  # one encoder state per intermediate level 1..L-1
        self.channels: dict[int, int] = {}
        self.skips = nn.ModuleDict()
        for stride in skip_strides(out_stride, patch_size):
            self.channels[stride] = feature_size * stride
            if stride == 1:
                self.skips[f"stride{stride}"] = _image_block(feature_size, norm)
            else:
                self.skips[f"stride{stride}"] = UnetrPrUpBlock(
                    spatial_dims=2,
                    in_channels=embed_dim,
                    out_channels=feature_size * stride,
                    num_layer=levels - int(math.log2(stride)) - 1,
                    kernel_size=3,
                    stride=1,
                    upsample_kernel_size=2,
                    norm_name=norm,
                    conv_block=True,
                    res_block=True,
                )

    def forward(self, features: EncoderOutput, image: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Return the bottleneck ``(B, d, h, w)`` and the skip maps keyed by stride.

        Raises
        ------
        ValueError
            If the encoder returned a different number of hidden states than this pyramid reads.
        """
        if len(features.hidden_states) != self.num_hidden_states:
            raise ValueError(
                f"the decoder needs {self.num_hidden_states} encoder hidden states, got {len(features.hidden_states)}"
            )
        skips: dict[int, torch.Tensor] = {}
        for stride in self.channels:
            block = self.skips[f"stride{stride}"]
            if stride == 1:
                skips[stride] = block(image)
            else:
                level = int(math.log2(stride))
                state = tokens_to_map(features.hidden_states[level - 1], features.grid)  # (B, d, h, w)
                skips[stride] = block(state)
        return tokens_to_map(features.tokens, features.grid), skips


class CNNPyramid(nn.Module):
    """Skip paths for a CNN encoder: its own feature maps, plus a conv block on the image for stride 1.

    Parameters
    ----------
    encoder_channels
        Stride -> channels of the encoder's maps; the largest stride is the bottleneck.
    out_stride
        Finest stride the decoder reaches (power of 2, a stride of ``encoder_channels`` or 1).
    feature_size
        Channels of the stride-1 image skip. Default 16.
    norm
        MONAI norm name of the image conv block. Default ``"instance"``.

    Raises
    ------
    ValueError
        If ``out_stride`` is not 1 or a stride of ``encoder_channels`` below the bottleneck.
    """

    def __init__(
        self, encoder_channels: dict[int, int], out_stride: int, feature_size: int = 16, norm: str = "instance"
    ) -> None:
        super().__init__()
        self.bottleneck_stride = max(encoder_channels)
        self.bottleneck_channels = encoder_channels[self.bottleneck_stride]
        _check_power_of_two("out_stride", out_stride)
        valid = [1, *sorted(s for s in encoder_channels if s < self.bottleneck_stride)]
        if out_stride not in valid:
            raise ValueError(f"out_stride {out_stride} must be one of {valid} for this encoder")
        self.channels = {
            s: (feature_size if s == 1 else encoder_channels[s])
            for s in skip_strides(out_stride, self.bottleneck_stride)
        }
        self.skips = nn.ModuleDict()
        if 1 in self.channels:
            self.skips["stride1"] = _image_block(feature_size, norm)

    def forward(self, features: FeaturePyramid, image: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Return the bottleneck map and the skip maps keyed by stride."""
        skips = {s: (self.skips["stride1"](image) if s == 1 else features.maps[s]) for s in self.channels}
        return features.maps[self.bottleneck_stride], skips
