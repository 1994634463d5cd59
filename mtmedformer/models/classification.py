"""Classification head: pool the encoder output to one vector per image, then a linear classifier."""

from __future__ import annotations

import torch
from torch import nn

from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput


class TokenPool(nn.Module):
    """Pool ViT tokens ``(B, 1 + N, d)`` to ``(B, d)``: the class token (``"cls"``) or the patch-token mean.

    Raises
    ------
    ValueError
        If ``mode`` is neither ``"cls"`` nor ``"mean"``.
    """

    def __init__(self, mode: str = "cls") -> None:
        super().__init__()
        if mode not in ("cls", "mean"):
            raise ValueError(f"pooling mode {mode!r} is not one of ['cls', 'mean']")
        self.mode = mode

    def forward(self, features: EncoderOutput) -> torch.Tensor:
        """Return ``(B, d)``."""
        if self.mode == "cls":
            return features.tokens[:, 0]
        return features.tokens[:, 1:].mean(dim=1)


class GlobalAvgPool(nn.Module):
    """Average the coarsest map of a CNN feature pyramid ``(B, C, h, w)`` to ``(B, C)``."""

    def forward(self, features: FeaturePyramid) -> torch.Tensor:
        """Return ``(B, C)``."""
        return features.maps[max(features.maps)].mean(dim=(-2, -1))


class ClassificationHead(nn.Module):
    """Image-level logits ``(B, num_classes)`` from a pooled feature vector.

    Parameters
    ----------
    pool
        Module mapping the encoder output to ``(B, in_features)`` (:class:`TokenPool`, :class:`GlobalAvgPool`).
    in_features
        Width of the pooled vector.
    num_classes
        Number of classes (>= 2).
    dropout
        Dropout on the pooled vector. Default 0.

    Raises
    ------
    ValueError
        If ``num_classes < 2``, ``in_features < 1`` or ``dropout`` is outside [0, 1).
    """

    def __init__(self, pool: nn.Module, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pool = pool
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: EncoderOutput | FeaturePyramid, image: torch.Tensor) -> torch.Tensor:
        """Return class logits ``(B, num_classes)``; ``image`` is unused (uniform head interface)."""
        return self.fc(self.drop(self.pool(features)))
