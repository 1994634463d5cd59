"""Classification head: pool the encoder output to one vector per image, then a linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class LesionPool(nn.Module):
    """Average the finest-grained encoder features weighted by the segmentation head's lesion probability.

    Malignancy is a property of the lesion (its margin, outline and spiculation), which covers a few percent
    of a mammogram: a class token or a global mean must first learn *where* to look, which a ViT trained from
    scratch on a few hundred images does slowly. The segmentation decoder learns lesion locations within an
    epoch or two; this pool reuses that: with ``p_i`` the mean predicted lesion probability over the pixels of
    feature cell ``i`` (detached, so classification gradients do not bend the segmentation decoder), the pooled
    vector is ``sum_i (p_i + floor) f_i / sum_i (p_i + floor)``. The ``floor`` turns it into the plain mean of
    the cells when no lesion is predicted. It has no parameters, so federated aggregation and neuron matching
    treat it like the mean pool.

    Features are ViT patch tokens ``(B, 1 + N, d)`` on their ``(h, w)`` grid (the class token is left out) or
    the coarsest map ``(B, C, h, w)`` of a CNN feature pyramid.

    Parameters
    ----------
    floor
        Weight every cell gets on top of its lesion probability, ``> 0``. Default 0.01.

    Raises
    ------
    ValueError
        If ``floor <= 0``.
    """

    needs_lesion_logits = True

    def __init__(self, floor: float = 0.01) -> None:
        super().__init__()
        if not floor > 0:
            raise ValueError(f"floor must be > 0, got {floor}")
        self.floor = floor

    @staticmethod
    def feature_map(features: EncoderOutput | FeaturePyramid) -> torch.Tensor:
        """The features as a map ``(B, C, h, w)``."""
        if isinstance(features, EncoderOutput):
            h, w = features.grid
            patches = features.tokens[:, 1:]
            return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
        return features.maps[max(features.maps)]

    def forward(self, features: EncoderOutput | FeaturePyramid, lesion_logits: torch.Tensor) -> torch.Tensor:
        """Return ``(B, C)``; ``lesion_logits`` are the segmentation logits ``(B, 1, H, W)``."""
        fmap = self.feature_map(features)
        prob = F.adaptive_avg_pool2d(torch.sigmoid(lesion_logits.detach().float()), fmap.shape[-2:])
        weight = (prob + self.floor).to(fmap.dtype)
        return (fmap * weight).sum(dim=(-2, -1)) / weight.sum(dim=(-2, -1))


class ClassificationHead(nn.Module):
    """Image-level logits ``(B, num_classes)`` from a pooled feature vector.

    Parameters
    ----------
    pool
        Module mapping the encoder output to ``(B, in_features)`` (:class:`TokenPool`, :class:`GlobalAvgPool`,
        or :class:`LesionPool`, which also reads the segmentation logits).
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

    @property
    def needs_lesion_logits(self) -> bool:
        """True when the pool reads the segmentation head's logits (the model runs that head first)."""
        return bool(getattr(self.pool, "needs_lesion_logits", False))

    def forward(
        self,
        features: EncoderOutput | FeaturePyramid,
        image: torch.Tensor,
        lesion_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return class logits ``(B, num_classes)``.

        ``image`` is unused (uniform head interface); ``lesion_logits`` ``(B, 1, H, W)`` are required by a
        :class:`LesionPool` and ignored otherwise.

        Raises
        ------
        ValueError
            If the pool needs lesion logits and none are given.
        """
        if self.needs_lesion_logits:
            if lesion_logits is None:
                raise ValueError("this classification head pools by lesion probability: pass the segmentation logits")
            pooled = self.pool(features, lesion_logits)
        else:
            pooled = self.pool(features)
        return self.fc(self.drop(pooled))
