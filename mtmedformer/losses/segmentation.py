"""Per-sample lesion segmentation loss: soft Dice plus binary cross-entropy or sigmoid focal loss (MONAI).

Why per sample: the hybrid loss averages the segmentation term over the samples that carry a mask only,
so the loss must return one value per sample rather than a batch mean.

Dice on annotated-negative (all-zero) masks
-------------------------------------------
For an all-zero target the per-sample soft Dice loss with numerator/denominator smoothing ``s`` is
``1 - s / (sum(p) + s) = sum(p) / (sum(p) + s)``, where ``p`` are the predicted probabilities.
With MONAI's default ``s = 1e-5`` this is close to 1 for any realistic prediction (logits of -20 on a
64 x 64 image already give ``sum(p) ~ 8e-6`` and a loss of ~0.45), so Dice could not tell an empty
prediction from a false positive. With ``s = dice_smooth = 1`` pixel (the default) the loss is about the
predicted area ``sum(p)`` while that is below one pixel (-> 0 for an empty prediction) and tends to 1 as the
predicted area grows (a false positive is penalised). For a lesion of ``A`` pixels the same smoothing
changes the Dice loss by at most about ``1 / A``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from torch import nn

from mtmedformer.config.loss import SegmentationLossConfig


class SegmentationLoss(nn.Module):
    """``dice_weight * Dice + ce_weight * (BCE | focal)`` per sample, on sigmoid probabilities of the logits.

    Parameters
    ----------
    cfg
        Weights of the two terms, the pixel-wise term's kind, the focal ``gamma`` and the Dice smoothing
        (see the module docstring for why the smoothing defaults to one pixel).
    """

    def __init__(self, cfg: SegmentationLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else SegmentationLossConfig()
        smooth = self.cfg.dice_smooth
        # batch=False: Dice is computed per sample, reduction="none" keeps the (N, 1, 1, 1) values.
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth, smooth_dr=smooth, batch=False)
        self.focal = FocalLoss(gamma=self.cfg.focal_gamma, reduction="none") if self.cfg.ce_kind == "focal" else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the loss of every sample.

        Parameters
        ----------
        logits
            ``(N, 1, H, W)`` raw mask logits (no sigmoid applied).
        target
            ``(N, 1, H, W)`` binary mask in ``{0, 1}`` (any dtype); all zero = annotated "no lesion".

        Returns
        -------
        torch.Tensor
            ``(N,)`` per-sample loss; the pixel-wise term is the mean over the sample's pixels.

        Raises
        ------
        ValueError
            If the shapes differ or are not ``(N, 1, H, W)``.
        """
        if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape != target.shape:
            raise ValueError(
                f"segmentation loss expects logits and target of one shape (N, 1, H, W), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}"
            )
        target = target.to(logits.dtype)
        dice = self.dice(logits, target).flatten(1).mean(1)  # (N, 1, 1, 1) -> (N,)
        if self.focal is not None:
            pixel = self.focal(logits, target)  # (N, 1, H, W) element-wise focal loss
        else:
            pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (N, 1, H, W)
        pixel = pixel.flatten(1).mean(1)  # (N, 1, H, W) -> (N,)
        return self.cfg.dice_weight * dice + self.cfg.ce_weight * pixel
