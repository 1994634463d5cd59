"""Binary lesion segmentation head: U-shaped decoder to full resolution and a 1x1 output convolution.

With a :class:`~mtmedformer.models.pyramids.ViTPyramid` this is the 2D UNETR decoder (Hatamizadeh et al.,
"UNETR: Transformers for 3D Medical Image Segmentation", WACV 2022) built from MONAI's UNETR blocks; with a
:class:`~mtmedformer.models.pyramids.CNNPyramid` it is a U-Net decoder over the ResNet pyramid.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetOutBlock
from torch import nn

from mtmedformer.models.decoder import UpDecoder
from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput


class SegmentationHead(nn.Module):
    """Lesion logits ``(B, 1, H, W)`` (apply a sigmoid for probabilities).

    Parameters
    ----------
    pyramid
        Skip-path module built with ``out_stride=1``.
    decoder
        :class:`UpDecoder` from the pyramid's bottleneck down to stride 1.

    Raises
    ------
    ValueError
        If the decoder does not end at stride 1.
    """

    def __init__(self, pyramid: nn.Module, decoder: UpDecoder) -> None:
        super().__init__()
        if not decoder.strides or decoder.strides[-1] != 1:
            raise ValueError(f"the segmentation decoder must end at stride 1, it passes strides {decoder.strides}")
        self.pyramid = pyramid
        self.decoder = decoder
        self.out = UnetOutBlock(spatial_dims=2, in_channels=decoder.out_channels, out_channels=1)

    def forward(self, features: EncoderOutput | FeaturePyramid, image: torch.Tensor) -> torch.Tensor:
        """Return mask logits ``(B, 1, H, W)`` for ``image`` ``(B, 1, H, W)``."""
        bottleneck, skips = self.pyramid(features, image)
        return self.out(self.decoder(bottleneck, skips))
