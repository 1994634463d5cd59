"""Lesion detection metrics (one lesion class): mAP@0.5 and the RSNA Pneumonia Detection Challenge score.

Inputs, per image ``i``: ``detections[i] = {"boxes": (N_i, 4), "scores": (N_i,)}`` and ``ground_truths[i]``
``(M_i, 4)``; boxes are ``xyxy`` in pixels (continuous coordinates: area ``(x2 - x1) (y2 - y1)``), numpy or
torch. Images with ``M_i = 0`` are annotated negatives: their detections are false positives.

mAP@0.5 (:func:`average_precision`)
    All detections of all images are ranked by score (descending; ties keep input order). Each is matched
    to the unmatched ground-truth box of its image with the highest IoU if that IoU is ``>= 0.5`` (COCO
    rule; a ground-truth box is matched at most once), else it is a false positive. AP is the area under
    the precision-recall curve with all-point interpolation (PASCAL VOC 2010+ / COCO style: precision made
    monotone from the right, summed over recall steps). With one class, mAP = AP. No ground-truth box in
    the whole set: recall, hence AP, is undefined -> ``None`` (with a note; the false positives are
    still counted by the RSNA score).

RSNA score (:func:`rsna_score`)
    Per image, for each IoU threshold ``t`` in 0.40, 0.45, ..., 0.75: detections in descending score order
    are greedily matched to the unmatched ground-truth box with the highest IoU, a hit when ``IoU > t``
    (strictly, as in the Kaggle definition); the image's value at ``t`` is ``TP / (TP + FP + FN)``. The
    image score is the mean over thresholds, the set score the mean over images. As in the Kaggle metric,
    an image with neither ground truth nor detections is excluded; one without ground truth but with
    detections scores 0. When every image is excluded the score is ``None`` (noted). Unlike mAP, this score
    counts every submitted box (it is not a ranking metric), so challenge entries submitted only confident
    boxes: :func:`detection_metrics` scores the detections with ``score >= rsna_min_score``
    (:data:`RSNA_MIN_SCORE` by default) while mAP@0.5 ranks all of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.data.box_utils import box_iou

RSNA_THRESHOLDS: tuple[float, ...] = tuple(round(0.40 + 0.05 * k, 2) for k in range(8))
"""IoU thresholds of the RSNA Pneumonia Detection Challenge metric: 0.40, 0.45, ..., 0.75."""

RSNA_MIN_SCORE = 0.5
"""Confidence a detection needs to count in the RSNA score (mAP@0.5 uses every detection)."""


def _boxes(value: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    array = array.reshape(-1, 4) if array.size == 0 else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) xyxy, got {array.shape}")
    return array


def _prepare(
    detections: Sequence[Mapping[str, np.ndarray | torch.Tensor]], ground_truths: Sequence[np.ndarray | torch.Tensor]
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    if len(detections) != len(ground_truths):
        raise ValueError(f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}")
    boxes, scores, gts = [], [], []
    for i, (det, gt) in enumerate(zip(detections, ground_truths, strict=True)):
        b = _boxes(det["boxes"], f"detections[{i}]['boxes']")
        s = np.asarray(det["scores"].detach().cpu() if isinstance(det["scores"], torch.Tensor) else det["scores"])
        s = s.astype(np.float64).reshape(-1)
        if s.shape[0] != b.shape[0]:
            raise ValueError(f"detections[{i}] has {b.shape[0]} boxes but {s.shape[0]} scores")
        boxes.append(b)
        scores.append(s)
        gts.append(_boxes(gt, f"ground_truths[{i}]"))
    return boxes, scores, gts


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    return np.asarray(box_iou(a, b), dtype=np.float64)  # (N, 4), (M, 4) -> (N, M)


def _greedy_hits(iou: np.ndarray, order: np.ndarray, threshold: float, strict: bool) -> np.ndarray:
    """Match detections (rows of ``iou``, visited in ``order``) to columns; return hit flags in that order."""
    matched = np.zeros(iou.shape[1], dtype=bool)
    hits = np.zeros(order.size, dtype=bool)
    for k, d in enumerate(order):
        if matched.all():
            break
        candidates = np.where(matched, -1.0, iou[d])
        g = int(candidates.argmax())
        best = candidates[g]
        if best > threshold or (not strict and best >= threshold):
            matched[g] = True
            hits[k] = True
    return hits


def average_precision(
    detections: Sequence[Mapping[str, np.ndarray | torch.Tensor]],
    ground_truths: Sequence[np.ndarray | torch.Tensor],
    iou_threshold: float = 0.5,
) -> float | None:
    """All-point interpolated AP of one class over all images (see the module docstring).

    Parameters
    ----------
    detections
        One ``{"boxes": (N_i, 4), "scores": (N_i,)}`` per image.
    ground_truths
        One ``(M_i, 4)`` array per image, same order.
    iou_threshold
        Minimum IoU (inclusive) of a true positive. Default 0.5.

    Returns
    -------
    float | None
        AP in ``[0, 1]``; ``0`` when there is ground truth but no detection; ``None`` when no image has a
        ground-truth box.

    Raises
    ------
    ValueError
        On mismatched lengths or bad shapes.
    """
    boxes, scores, gts = _prepare(detections, ground_truths)
    num_gt = sum(g.shape[0] for g in gts)
    if num_gt == 0:
        return None
    image_of, score_of, hit_of = [], [], []
    for i, (b, s, g) in enumerate(zip(boxes, scores, gts, strict=True)):
        order = np.argsort(-s, kind="stable")
        hits = _greedy_hits(_iou(b, g), order, iou_threshold, strict=False)
        image_of.append(np.full(order.size, i))
        score_of.append(s[order])
        hit_of.append(hits)
    # Matching inside each image in score order equals matching in the global score order, since a detection
    # can only take ground truth of its own image; only the ranking for the PR curve is global.
    all_scores = np.concatenate(score_of)
    if all_scores.size == 0:
        return 0.0
    all_hits = np.concatenate(hit_of)[np.argsort(-all_scores, kind="stable")]
    tp = np.cumsum(all_hits)
    fp = np.cumsum(~all_hits)
    recall = tp / num_gt
    precision = tp / (tp + fp)
    # All-point interpolation: envelope of precision from the right, integrated over recall steps.
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def rsna_image_score(
    boxes: np.ndarray, scores: np.ndarray, ground_truth: np.ndarray, thresholds: Sequence[float] = RSNA_THRESHOLDS
) -> float | None:
    """RSNA score of one image: mean over ``thresholds`` of ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    boxes, scores
        ``(N, 4)`` detected boxes and their ``(N,)`` scores.
    ground_truth
        ``(M, 4)`` ground-truth boxes.
    thresholds
        IoU thresholds (a hit needs ``IoU > t``). Default :data:`RSNA_THRESHOLDS`.

    Returns
    -------
    float | None
        The score in ``[0, 1]``, or ``None`` when ``N = M = 0`` (the image is excluded from the mean).
    """
    if boxes.shape[0] == 0 and ground_truth.shape[0] == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    iou = _iou(boxes, ground_truth)
    values = []
    for t in thresholds:
        tp = int(_greedy_hits(iou, order, t, strict=True).sum())
        values.append(tp / (boxes.shape[0] + ground_truth.shape[0] - tp))  # TP + FP + FN = N + M - TP
    return float(np.mean(values))


def rsna_score(
    detections: Sequence[Mapping[str, np.ndarray | torch.Tensor]],
    ground_truths: Sequence[np.ndarray | torch.Tensor],
    thresholds: Sequence[float] = RSNA_THRESHOLDS,
    min_score: float = 0.0,
) -> tuple[float | None, int]:
    """RSNA Pneumonia Detection Challenge score over a set of images (see the module docstring).

    Parameters
    ----------
    detections
        One ``{"boxes": (N_i, 4), "scores": (N_i,)}`` per image.
    ground_truths
        One ``(M_i, 4)`` array per image, same order.
    thresholds
        IoU thresholds. Default :data:`RSNA_THRESHOLDS`.
    min_score
        Detections scoring below this are not submitted. Default 0 (all count).

    Returns
    -------
    tuple[float | None, int]
        The mean over counted images (``None`` when none is counted) and the number of images counted.

    Raises
    ------
    ValueError
        On mismatched lengths or bad shapes.
    """
    boxes, scores, gts = _prepare(detections, ground_truths)
    kept = [s >= min_score for s in scores]
    boxes, scores = [b[k] for b, k in zip(boxes, kept, strict=True)], [s[k] for s, k in zip(scores, kept, strict=True)]
    per_image = [rsna_image_score(b, s, g, thresholds) for b, s, g in zip(boxes, scores, gts, strict=True)]
    counted = [v for v in per_image if v is not None]
    return (float(np.mean(counted)) if counted else None), len(counted)


def detection_metrics(
    detections: Sequence[Mapping[str, np.ndarray | torch.Tensor]],
    ground_truths: Sequence[np.ndarray | torch.Tensor],
    rsna_min_score: float = RSNA_MIN_SCORE,
) -> tuple[dict[str, float | int | None], list[str]]:
    """Compute ``map50``, ``map_rsna`` and their counts, and the notes explaining any ``None``.

    mAP@0.5 ranks every detection; the RSNA score counts those scoring ``>= rsna_min_score``.

    Returns
    -------
    tuple[dict[str, float | int | None], list[str]]
        ``{"n": images, "n_boxes": ground-truth boxes, "map50", "map_rsna", "n_rsna": images counted by
        the RSNA score}`` and notes.
    """
    notes: list[str] = []
    map50 = average_precision(detections, ground_truths, 0.5)
    map_rsna, n_rsna = rsna_score(detections, ground_truths, min_score=rsna_min_score)
    n_boxes = sum(_boxes(g, "ground truth").shape[0] for g in ground_truths)
    if map50 is None:
        notes.append("detection/map50 is undefined: no ground-truth box in the evaluated images")
    if map_rsna is None:
        notes.append(
            "detection/map_rsna is undefined: every evaluated image has neither ground truth nor detections "
            "(such images are excluded, as in the RSNA challenge metric)"
        )
    out = {"n": len(ground_truths), "n_boxes": n_boxes, "map50": map50, "map_rsna": map_rsna, "n_rsna": n_rsna}
    return out, notes
