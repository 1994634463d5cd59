"""Image-level classification metrics: ROC-AUC, accuracy, sensitivity, specificity and F1.

Conventions
-----------
- Predicted class = ``argmax`` of the probabilities (ties go to the lower index); for binary classification
  with a given ``threshold``, class 1 when its probability is ``>= threshold`` (an operating point chosen on
  validation data, :mod:`mtmedformer.metrics.operating_point`).
- Binary (``C = 2``): the positive class is index 1 (e.g. malignant, pneumonia). Sensitivity =
  ``TP / (TP + FN)``, specificity = ``TN / (TN + FP)``, F1 = ``2 TP / (2 TP + FP + FN)``, AUC of the class-1
  probability (MONAI ``compute_roc_auc``; ties count one half, as in the Mann-Whitney U statistic).
- Multi-class (``C > 2``): macro averages over classes of the one-vs-rest values (sensitivity is then the
  balanced accuracy), AUC macro one-vs-rest.

Undefined values are ``None`` (never NaN) with a reason in the returned notes: AUC when the evaluated set has
a single class; sensitivity without positive samples; specificity without negatives; F1 when there is no
positive sample and no positive prediction. In the multi-class case a class whose value is undefined is left
out of the macro average (noted), and the average is ``None`` only when no class has a defined value.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_roc_auc

CLASSIFICATION_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None


def roc_auc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float | None:
    """Binary ROC-AUC of ``scores`` for ``labels`` (MONAI ``compute_roc_auc``).

    Parameters
    ----------
    scores
        ``(N,)`` scores of the positive class (higher = more likely positive).
    labels
        ``(N,)`` in ``{0, 1}``.

    Returns
    -------
    float | None
        The AUC (tied scores count 1/2 per positive-negative pair), or ``None`` when ``labels`` holds a single
        class (or nothing), where the AUC is undefined.

    Raises
    ------
    ValueError
        If the shapes differ or labels are not in ``{0, 1}``.
    """
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64)).flatten()
    y = torch.as_tensor(np.asarray(labels)).flatten()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have one length, got {tuple(s.shape)} and {tuple(y.shape)}")
    if bool(((y != 0) & (y != 1)).any()):
        raise ValueError(f"binary AUC needs labels in {{0, 1}}, got {sorted(set(y.tolist()))}")
    if y.numel() == 0 or bool((y == y[0]).all()):
        return None
    return float(compute_roc_auc(s, y.long()))


def _check(probs: np.ndarray, labels: np.ndarray) -> None:
    if probs.ndim != 2 or probs.shape[1] < 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"classification metrics expect probabilities (N, C >= 2) and labels (N,), "
            f"got {probs.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got {sorted(set(labels.tolist()))}")


def _binary(probs: np.ndarray, labels: np.ndarray, pred: np.ndarray, notes: list[str]) -> dict[str, float | None]:
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    out = {
        "auc": roc_auc(probs[:, 1], labels),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    if out["auc"] is None:
        notes.append("classification/auc is undefined: the evaluated samples hold a single class")
    if out["sensitivity"] is None:
        notes.append("classification/sensitivity is undefined: no positive (class 1) sample")
    if out["specificity"] is None:
        notes.append("classification/specificity is undefined: no negative (class 0) sample")
    if out["f1"] is None:
        notes.append("classification/f1 is undefined: no positive sample and no positive prediction")
    return out


def _macro(values: list[float | None], name: str, notes: list[str]) -> float | None:
    skipped = [c for c, v in enumerate(values) if v is None]
    defined = [v for v in values if v is not None]
    if skipped:
        notes.append(f"classification/{name}: classes {skipped} left out of the macro average (undefined for them)")
    return float(np.mean(defined)) if defined else None


def _multiclass(
    probs: np.ndarray, labels: np.ndarray, pred: np.ndarray, notes: list[str]
) -> dict[str, float | None]:
    auc, sens, spec, f1 = [], [], [], []
    for c in range(probs.shape[1]):
        pos, hit = labels == c, pred == c
        tp, fp = int((pos & hit).sum()), int((~pos & hit).sum())
        fn, tn = int((pos & ~hit).sum()), int((~pos & ~hit).sum())
        auc.append(roc_auc(probs[:, c], pos.astype(np.int64)))
        sens.append(_ratio(tp, tp + fn))
        spec.append(_ratio(tn, tn + fp))
        f1.append(_ratio(2 * tp, 2 * tp + fp + fn))
    return {
        "auc": _macro(auc, "auc", notes),
        "sensitivity": _macro(sens, "sensitivity", notes),
        "specificity": _macro(spec, "specificity", notes),
        "f1": _macro(f1, "f1", notes),
    }


def classification_metrics(
    probs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, threshold: float | None = None
) -> tuple[dict[str, float | int | None], list[str]]:
    """Compute all classification metrics (see the module docstring for definitions and edge cases).

    Parameters
    ----------
    probs
        ``(N, C)`` class probabilities (rows sum to 1; only their order and argmax matter), ``C >= 2``.
    labels
        ``(N,)`` int class indices in ``[0, C)``.
    threshold
        Binary only: predict class 1 when its probability is ``>= threshold`` instead of the argmax. The AUC
        does not depend on it.

    Returns
    -------
    tuple[dict[str, float | int | None], list[str]]
        ``{"n", "auc", "accuracy", "sensitivity", "specificity", "f1"}`` (``None`` where undefined, all
        ``None`` but ``n`` when ``N = 0``) and the notes explaining each ``None``.

    Raises
    ------
    ValueError
        On bad shapes, labels outside ``[0, C)``, or a ``threshold`` with ``C > 2`` or outside ``[0, 1]``.
    """
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    _check(p, y)
    if threshold is not None and (p.shape[1] != 2 or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"a threshold in [0, 1] applies to 2 classes only, got {threshold} with {p.shape[1]}")
    notes: list[str] = []
    if y.size == 0:
        notes.append("classification: no labelled sample was evaluated; all metrics are undefined")
        return {"n": 0, **dict.fromkeys(CLASSIFICATION_KEYS)}, notes
    pred = p.argmax(1) if threshold is None else (p[:, 1] >= threshold).astype(np.int64)
    values = _binary(p, y, pred, notes) if p.shape[1] == 2 else _multiclass(p, y, pred, notes)
    accuracy = float((pred == y).mean())
    return {"n": int(y.size), "accuracy": accuracy, **values}, notes
