"""Lesion segmentation metrics per image (MONAI Dice, IoU, HD95) and their means over images.

Empty-mask policy (applied per image; no NaN or inf ever reaches a mean):

====================  ==================  ===========  ============================================
ground truth          prediction          Dice / IoU   HD95 (pixels)
====================  ==================  ===========  ============================================
empty                 empty               1            0 (a correct "no lesion")
empty                 not empty           0            image diagonal ``sqrt((H-1)^2 + (W-1)^2)``
not empty             empty               0            image diagonal
not empty             not empty           MONAI        MONAI ``compute_hausdorff_distance``, 95th pct
====================  ==================  ===========  ============================================

The image diagonal is the largest distance two pixels of the image can have, so it is the finite worst
case of HD95. Means are reported over all images and over images whose ground truth has a lesion; the
latter are unaffected by the policy for empty ground truth.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

SEGMENTATION_KEYS = ("dice", "iou", "hd95")


def _as_masks(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).detach().cpu()
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError(f"{name} must be binary (bool or values in {{0, 1}}); threshold probabilities first")
        mask = mask != 0
    return mask


def segmentation_scores(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Score every image: Dice, IoU and HD95 with the module's empty-mask policy.

    Parameters
    ----------
    pred, target
        Binary masks of shape ``(N, H, W)`` or ``(N, 1, H, W)``: bool, or numbers in ``{0, 1}``
        (numpy or torch, any device).

    Returns
    -------
    dict[str, numpy.ndarray]
        ``"dice"``, ``"iou"``, ``"hd95"`` (float64, ``(N,)``, HD95 in pixels) and ``"has_lesion"``
        (bool ``(N,)``: the ground truth is not empty).

    Raises
    ------
    ValueError
        If the shapes differ or are not as above, or a mask is not binary.
    """
    pred_t, target_t = _as_masks(pred, "pred"), _as_masks(target, "target")
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred_t.shape)} vs {tuple(target_t.shape)}")
    n, _, height, width = target_t.shape
    pred_any = pred_t.flatten(1).any(1).numpy()  # (N,)
    target_any = target_t.flatten(1).any(1).numpy()  # (N,)
    diagonal = math.hypot(height - 1, width - 1)

    dice = np.zeros(n, dtype=np.float64)
    iou = np.zeros(n, dtype=np.float64)
    hd95 = np.full(n, diagonal, dtype=np.float64)
    both_empty = ~pred_any & ~target_any
    dice[both_empty], iou[both_empty], hd95[both_empty] = 1.0, 1.0, 0.0
    both = pred_any & target_any
    if both.any():
        idx = torch.from_numpy(np.flatnonzero(both))
        p, t = pred_t[idx].float(), target_t[idx].float()
        dice[both] = compute_dice(p, t, include_background=True).flatten().numpy()
        iou[both] = compute_iou(p, t, include_background=True).flatten().numpy()
        with warnings.catch_warnings():
            # MONAI 1.6 warns about its own internal use of a deprecated argument; nothing to act on here.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd95[both] = compute_hausdorff_distance(p, t, include_background=True, percentile=95).flatten().numpy()
    return {"dice": dice, "iou": iou, "hd95": hd95, "has_lesion": target_any.astype(bool)}


def summarize_segmentation(scores: dict[str, np.ndarray]) -> dict[str, float | int | None]:
    """Average per-image scores from :func:`segmentation_scores` (possibly concatenated over batches).

    Returns
    -------
    dict[str, float | int | None]
        ``n`` (images), ``n_lesion`` (images with a lesion), ``dice``/``iou``/``hd95`` (mean over all
        images) and ``dice_lesion``/``iou_lesion``/``hd95_lesion`` (mean over lesion images). A mean over
        no image is ``None``.
    """
    has_lesion = np.asarray(scores["has_lesion"], dtype=bool)
    out: dict[str, float | int | None] = {"n": int(has_lesion.size), "n_lesion": int(has_lesion.sum())}
    for key in SEGMENTATION_KEYS:
        values = np.asarray(scores[key], dtype=np.float64)
        out[key] = float(values.mean()) if values.size else None
        out[f"{key}_lesion"] = float(values[has_lesion].mean()) if has_lesion.any() else None
    return out
