"""ResNet-18 encoder for grayscale images (He et al., "Deep Residual Learning", CVPR 2016), the CNN baseline.

torchvision's ``resnet18(weights=None)`` with a one-channel stem; the average pool and the ImageNet classifier
are dropped. Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so ImageNet
weights could be loaded for every layer but ``conv1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtmedformer.compat import import_torchvision

RESNET18_CHANNELS: dict[int, int] = {2: 64, 4: 64, 8: 128, 16: 256, 32: 512}
"""Channels of the ResNet-18 feature map at each output stride."""


@dataclass
class FeaturePyramid:
    """What :meth:`ResNetEncoder.forward_features` returns.

    Attributes
    ----------
    maps
        Stride -> feature map ``(B, C_s, H / s, W / s)`` for the strides of :data:`RESNET18_CHANNELS`.
    """

    maps: dict[int, torch.Tensor]


class ResNetEncoder(nn.Module):
    """ResNet-18 feature pyramid for ``(B, 1, H, W)`` images, ``H`` and ``W`` multiples of 32.

    The BatchNorm layers keep running statistics: in federated training they are averaged like weights (FedAvg
    on BN statistics), which is the usual baseline behaviour.
    """

    def __init__(self) -> None:
        super().__init__()
        torchvision = import_torchvision()
        net = torchvision.models.resnet18(weights=None)
        self.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)  # grayscale stem
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.channels = dict(RESNET18_CHANNELS)

    def forward_features(self, image: torch.Tensor) -> FeaturePyramid:
        """Return the feature maps of ``image`` ``(B, 1, H, W)`` at strides 2, 4, 8, 16, 32.

        Raises
        ------
        ValueError
            If ``image`` is not ``(B, 1, H, W)`` or ``H``/``W`` is not a multiple of 32.
        """
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a grayscale batch (B, 1, H, W), got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"image size {height}x{width} is not a multiple of 32, the ResNet output stride")
        s2 = self.relu(self.bn1(self.conv1(image)))  # (B, 64, H/2, W/2)
        s4 = self.layer1(self.maxpool(s2))  # (B, 64, H/4, W/4)
        s8 = self.layer2(s4)  # (B, 128, H/8, W/8)
        s16 = self.layer3(s8)  # (B, 256, H/16, W/16)
        s32 = self.layer4(s16)  # (B, 512, H/32, W/32)
        return FeaturePyramid(maps={2: s2, 4: s4, 8: s8, 16: s16, 32: s32})

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the stride-32 feature map ``(B, 512, H / 32, W / 32)``."""
        return self.forward_features(image).maps[32]
