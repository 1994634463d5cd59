"""The operating point of a binary classifier: the class-1 probability threshold, chosen on validation data.

A sample is predicted positive when its class-1 score is ``>=`` the threshold. The candidates are the distinct
validation scores, so every achievable (sensitivity, specificity) pair is considered and the chosen threshold
is one of the scores (the lowest score still called positive). The threshold is chosen once, on the
validation split, and then applied unchanged to the test split: choosing it on the test split would report
an optimistic operating point.

Rules
-----
- ``youden``: maximise Youden's J = sensitivity + specificity - 1. Ties (compared exactly, in integer
  counts) go to the candidate closest to 0.5, and between two equally close ones to the larger.
- ``target_sensitivity``: the largest candidate whose sensitivity is ``>= target``, i.e. the most specific
  threshold that still finds the target share of positives.
- ``fixed``: the configured threshold.

When the scores cannot choose (no labelled sample, or a single class, where sensitivity or specificity is
undefined) the fixed threshold is used and a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPERATING_RULES = ("youden", "target_sensitivity", "fixed")


@dataclass(frozen=True)
class OperatingPoint:
    """A chosen threshold and how it was chosen.

    Attributes
    ----------
    threshold
        Class-1 probability at or above which a sample is predicted positive.
    rule
        The rule that produced ``threshold``: the requested one, or ``"fixed"`` after a fallback.
    fallback
        True when the requested rule could not choose and the fixed threshold was used instead.
    notes
        Why a fallback happened (empty otherwise).
    """

    threshold: float
    rule: str
    fallback: bool = False
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, float | str | bool]:
        """The plain values stored in checkpoints: ``{"threshold", "rule", "fallback"}``."""
        return {"threshold": float(self.threshold), "rule": self.rule, "fallback": bool(self.fallback)}


def choose_operating_point(
    scores: np.ndarray,
    labels: np.ndarray,
    rule: str = "youden",
    *,
    target_sensitivity: float = 0.9,
    fixed_threshold: float = 0.5,
) -> OperatingPoint:
    """Choose the class-1 probability threshold of a binary classifier from validation scores.

    Parameters
    ----------
    scores
        ``(N,)`` class-1 probabilities (any real scores work; higher = more likely positive).
    labels
        ``(N,)`` labels in ``{0, 1}`` (1 = positive), the samples' true classes.
    rule
        ``"youden"``, ``"target_sensitivity"`` or ``"fixed"`` (see the module docstring).
    target_sensitivity
        The sensitivity to reach with ``rule="target_sensitivity"``, in ``(0, 1]``.
    fixed_threshold
        The threshold of ``rule="fixed"`` and of every fallback.

    Returns
    -------
    OperatingPoint
        The threshold (one of ``scores`` unless it is the fixed one), the rule that chose it, and a note when
        the fixed threshold stood in because ``labels`` is empty or holds a single class.

    Raises
    ------
    ValueError
        On an unknown rule, shapes that differ or are not 1-D, labels outside ``{0, 1}``, non-finite scores,
        or a target sensitivity outside ``(0, 1]``.
    """
    if rule not in OPERATING_RULES:
        raise ValueError(f"rule must be one of {list(OPERATING_RULES)}, got {rule!r}")
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be in {{0, 1}}, got {sorted(set(y.tolist()))}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if rule == "fixed":
        return OperatingPoint(float(fixed_threshold), "fixed")
    positives, negatives = np.sort(s[y == 1]), np.sort(s[y == 0])
    if positives.size == 0 or negatives.size == 0:
        reason = "no labelled sample" if y.size == 0 else f"only class {int(y[0])}"
        note = (
            f"classification/threshold: the validation samples hold {reason}, so rule '{rule}' cannot choose; "
            f"the fixed threshold {fixed_threshold} is used"
        )
        return OperatingPoint(float(fixed_threshold), "fixed", fallback=True, notes=(note,))
    candidates = np.unique(s)  # ascending
    # counts at threshold t (positive iff score >= t): TP = positives >= t, TN = negatives < t
    tp = positives.size - np.searchsorted(positives, candidates, side="left")
    tn = np.searchsorted(negatives, candidates, side="left")
    if rule == "target_sensitivity":
        # TP is non-increasing in t and the lowest candidate has TP = P, so a qualifying candidate exists.
        ok = np.flatnonzero(tp / positives.size >= target_sensitivity)
        return OperatingPoint(float(candidates[ok[-1]]), rule)
    # J * P * N in integers, so equal J values tie exactly.
    j = tp.astype(np.int64) * negatives.size + tn.astype(np.int64) * positives.size
    best = np.flatnonzero(j == j.max())
    distance = np.abs(candidates[best] - 0.5)
    closest = best[distance == distance.min()]
    return OperatingPoint(float(candidates[closest[-1]]), rule)
