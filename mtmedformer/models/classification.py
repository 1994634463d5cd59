"""Classification head: pool the encoder output to one vector per image, then a linear classifier.

With ``model.cls_descriptors`` the head also reads the segmentation head's logits: a
:class:`~mtmedformer.models.descriptors.DescriptorProbe` on the lesion's shape and margin descriptors adds its
logits to the linear layer's.
"""

from __future__ import annotations

import torch
from torch import nn

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.descriptors import DescriptorProbe, LesionDescriptors
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
    """Image-level logits ``(B, num_classes)`` from a pooled feature vector (and, optionally, the lesion).

    Parameters
    ----------
    pool
        Module mapping the encoder output to ``(B, in_features)`` (:class:`TokenPool` or :class:`GlobalAvgPool`).
    in_features
        Width of the pooled vector.
    num_classes
        Number of classes (>= 2).
    dropout
        Dropout on the pooled vector. Default 0.
    descriptors
        Optional :class:`LesionDescriptors`: their :class:`DescriptorProbe` (fitted between epochs, see there)
        adds its logits to those of the linear layer on the pooled vector. The head then reads the
        segmentation head's logits (see :attr:`reads_segmentation`).

    Raises
    ------
    ValueError
        If ``num_classes < 2``, ``in_features < 1`` or ``dropout`` is outside [0, 1).
    """

    def __init__(
        self,
        pool: nn.Module,
        in_features: int,
        num_classes: int,
        dropout: float = 0.0,
        descriptors: LesionDescriptors | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pool = pool
        self.descriptors = descriptors
        self.probe = DescriptorProbe(descriptors.size, num_classes) if descriptors is not None else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    @property
    def reads_segmentation(self) -> bool:
        """True when the descriptors read the segmentation head's logits (the model runs that head first)."""
        return self.descriptors is not None

    def forward(
        self,
        features: EncoderOutput | FeaturePyramid,
        image: torch.Tensor,
        lesion_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return class logits ``(B, num_classes)``.

        ``image`` ``(B, 1, H, W)`` (as the encoder sees it) and ``lesion_logits`` ``(B, 1, H, W)`` (the
        segmentation head's output) are read by the lesion descriptors only; without descriptors both are
        ignored.

        Raises
        ------
        ValueError
            If the head has descriptors and ``lesion_logits`` is not given.
        """
        if self.reads_segmentation and lesion_logits is None:
            raise ValueError("this classification head describes the predicted lesion: pass the segmentation logits")
        logits = self.fc(self.drop(self.pool(features)))
        if self.probe is not None:  # the descriptor probe's logits add to the learned classifier's
            logits = logits + self.probe(self.descriptors(image, lesion_logits)).to(logits.dtype)
        return logits


def classification_head(cfg: ModelConfig, pool: nn.Module, width: int, num_classes: int) -> ClassificationHead:
    """Build the classification head of ``cfg``: ``pool`` (output width ``width``), linear layer, descriptors.

    ``pool`` is the architecture's (:class:`TokenPool` of ``cfg.cls_pool`` for the ViT, :class:`GlobalAvgPool`
    for the CNN); with ``cfg.cls_descriptors`` the head gets :class:`LesionDescriptors` and their probe.
    """
    descriptors = LesionDescriptors() if cfg.cls_descriptors else None
    return ClassificationHead(pool, width, num_classes, dropout=cfg.dropout, descriptors=descriptors)
