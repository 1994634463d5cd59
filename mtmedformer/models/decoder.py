"""U-shaped decoder: repeated 2x upsampling, concatenation with a skip map, residual conv block (UNETR/U-Net)."""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetrUpBlock
from torch import nn

from mtmedformer.models.pyramids import skip_strides


class UpDecoder(nn.Module):
    """Decode a bottleneck map up to ``out_stride`` with one MONAI :class:`UnetrUpBlock` per factor of 2.

    The block producing stride ``s`` is ``ups.stride{s}``: transposed conv ``(C_in -> channels[s])``, concat with
    the stride-``s`` skip (which must have ``channels[s]`` channels), residual conv block ``(2 * channels[s] ->
    channels[s])``. This is UNETR's ``decoder5..decoder2`` when fed by a :class:`ViTPyramid`.

    Parameters
    ----------
    bottleneck_channels, bottleneck_stride
        Channels and stride of the decoder input.
    channels
        Stride -> channels of the skip and of the block output, for every stride from ``out_stride`` to
        ``bottleneck_stride / 2``.
    out_stride
        Stride of the output map (``== bottleneck_stride`` gives an empty decoder: output = bottleneck).
    norm
        MONAI norm name. Default ``"instance"``.

    Raises
    ------
    ValueError
        If ``channels`` lacks a stride the decoder passes through.
    """

    def __init__(
        self,
        bottleneck_channels: int,
        bottleneck_stride: int,
        channels: dict[int, int],
        out_stride: int,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        strides = skip_strides(out_stride, bottleneck_stride)
        missing = [s for s in strides if s not in channels]
        if missing:
            raise ValueError(f"UpDecoder needs channels for strides {strides}; missing {missing}")
        self.strides = sorted(strides, reverse=True)  # coarsest first: the order of decoding
        self.ups = nn.ModuleDict()
        in_channels = bottleneck_channels
        for stride in self.strides:
            self.ups[f"stride{stride}"] = UnetrUpBlock(
                spatial_dims=2,
                in_channels=in_channels,
                out_channels=channels[stride],
                kernel_size=3,
                upsample_kernel_size=2,
                norm_name=norm,
                res_block=True,
            )
            in_channels = channels[stride]
        self.out_channels = in_channels

    def forward(self, bottleneck: torch.Tensor, skips: dict[int, torch.Tensor]) -> torch.Tensor:
        """Return the map ``(B, out_channels, H / out_stride, W / out_stride)``."""
        x = bottleneck
        for stride in self.strides:
            x = self.ups[f"stride{stride}"](x, skips[stride])
        return x


def build_neck(pyramid: nn.Module, out_stride: int, norm: str) -> UpDecoder:
    """Return the :class:`UpDecoder` matching ``pyramid`` (a :class:`ViTPyramid` or :class:`CNNPyramid`)."""
    return UpDecoder(pyramid.bottleneck_channels, pyramid.bottleneck_stride, pyramid.channels, out_stride, norm)
