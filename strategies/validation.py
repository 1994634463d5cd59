"""Checks of one client reply's content before aggregation: a malformed or absurd reply never reaches the model.

Every function here says what is wrong (a one-line reason) or returns None; none raises on any input a peer
can send. :mod:`server.screening` calls them in one place for every reply; the bounds come from
``federated.screening`` (:class:`mtmedformer.config.federated.ScreeningConfig`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from mtmedformer.config.federated import ScreeningConfig
from strategies import keys

# Metrics (the part after the last "/") that are rates or scores in [0, 1]; NaN means undefined at the site.
UNIT_INTERVAL = frozenset({
    "accuracy", "auc", "f1", "sensitivity", "specificity", "dice", "dice_lesion", "iou", "iou_lesion",
    "map50", "map_rsna", "mean_score", "threshold", "threshold_fallback", "accuracy_at_threshold",
    "f1_at_threshold", "sensitivity_at_threshold", "specificity_at_threshold",
})
# Metrics that are never negative: losses, distances in pixels, wall times.
NON_NEGATIVE = frozenset({"loss", "hd95", "hd95_lesion", keys.TRAIN_SECONDS, keys.EVAL_SECONDS})


@dataclass(frozen=True)
class MetricKeys:
    """The metric keys a reply of one kind must carry (``required``) and may carry (``allowed``, a superset)."""

    required: frozenset[str]
    allowed: frozenset[str]


def check_update(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], limits: ScreeningConfig | None = None
) -> str | None:
    """Say what is wrong with a client's state dict compared with the global one, or return None.

    Parameters
    ----------
    update
        The client's arrays by parameter name.
    reference
        The global model's arrays the client was sent.
    limits
        With bounds: float values above ``max_abs_value`` in magnitude, and integer buffers below
        ``min(0, reference minimum)`` or above ``max_integer_value``, are wrong too. Default None: NaN/Inf only.

    Returns
    -------
    str or None
        A one-line reason (missing/extra keys, a wrong shape or dtype, NaN/Inf or absurd values), or None when
        the update is well-formed.
    """
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if extra:
            parts.append(f"unexpected {len(extra)} keys (e.g. {[str(k)[:80] for k in extra[:3]]})")
        return "; ".join(parts) + ": the client runs a different model config or version"
    for name, ref in reference.items():
        value = update[name]
        if tuple(value.shape) != tuple(ref.shape):
            return f"'{name}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if value.dtype != ref.dtype:
            return f"'{name}' has dtype {value.dtype}, expected {ref.dtype}"
        if value.size == 0 or value.dtype.kind not in "iuf":
            continue
        low, high = value.min(), value.max()  # two reductions, no temporary array; NaN propagates
        if value.dtype.kind == "f":
            if not (math.isfinite(low) and math.isfinite(high)):
                bad = int(value.size - np.isfinite(value).sum())
                return f"'{name}' holds {bad} NaN/Inf values: local training diverged"
            if limits is not None and max(-float(low), float(high)) > limits.max_abs_value:
                return (
                    f"'{name}' holds values up to {max(-float(low), float(high)):.3g} in magnitude, above "
                    f"federated.screening.max_abs_value={limits.max_abs_value:g}"
                )
        elif limits is not None:
            floor = min(0, int(ref.min())) if ref.size else 0
            if int(low) < floor or int(high) > limits.max_integer_value:
                return (
                    f"integer buffer '{name}' holds values in [{int(low)}, {int(high)}], outside [{floor}, "
                    f"federated.screening.max_integer_value={limits.max_integer_value}]"
                )
    return None


def check_weight(metrics: Mapping[str, object], key: str) -> str | None:
    """Say what is wrong with a reply's sample-count weight ``metrics[key]``, or return None."""
    if key not in metrics:
        return f"metric record lacks '{key}'"
    return check_count(metrics[key], key, minimum=1)


def check_count(value: object, key: str, minimum: int = 0, maximum: float = math.inf) -> str | None:
    """Say why ``value`` is not a whole number of samples in ``[minimum, maximum]``, or return None."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value != int(value) or value < minimum:
        kind = "positive" if minimum >= 1 else "non-negative"
        return f"'{key}' must be a {kind} whole number of samples, got {value!r}"
    if value > maximum:
        return f"'{key}' = {value:g} exceeds {maximum:g}"
    return None


def _check_value(key: str, value: float, count: float, limits: ScreeningConfig) -> str | None:
    """The range check of one metric of a reply whose ``num-examples`` is ``count``."""
    name = key.rsplit("/", 1)[-1]
    if key == keys.NUM_EXAMPLES:
        return None  # checked against the site's limits by the caller
    if name == "num-examples":
        return check_count(value, key, 0, count)
    if name.startswith("n_"):
        return check_count(value, key, 0, limits.max_abs_value)
    if name == "trained":
        return None if value in (0, 1) else f"'{key}' must be 0 or 1, got {value!r}"
    if math.isnan(value):
        return None  # undefined at this site (e.g. AUC of a single-class split): left out of the averages
    if name in UNIT_INTERVAL:
        return None if 0 <= value <= 1 else f"'{key}' must be in [0, 1] (or NaN when undefined), got {value!r}"
    low = 0.0 if name in NON_NEGATIVE else -limits.max_abs_value
    if not low <= value <= limits.max_abs_value:
        return f"'{key}' must be in [{low:g}, {limits.max_abs_value:g}] (or NaN when undefined), got {value!r}"
    return None


def check_metrics(
    metrics: Mapping[str, object],
    expected: MetricKeys | None,
    limits: ScreeningConfig,
    pinned: int | None = None,
) -> str | None:
    """Say what is wrong with a reply's metrics, or return None.

    Parameters
    ----------
    metrics
        The reply's metric record (or fused evaluation) as a mapping.
    expected
        The keys it must and may carry; None = any keys (only values are checked).
    limits
        ``max_examples_per_site`` bounds ``num-examples``, ``max_abs_value`` every other value.
    pinned
        ``num-examples`` of the site's first accepted reply of this kind: later claims may not exceed it.

    Returns
    -------
    str or None
        The first problem: a value that is not a number, a missing or unexpected key, a count that is not a
        whole number in range, a rate outside [0, 1], an infinite or absurd value.
    """
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric {str(key)[:80]!r} is a {type(value).__name__}, not a number"
    if expected is not None:
        missing = sorted(expected.required - set(metrics))
        extra = sorted(set(metrics) - expected.allowed)
        if missing or extra:
            return (
                f"metric keys differ from the expected ones (missing {missing[:3]}, unexpected "
                f"{[str(k)[:80] for k in extra[:3]]}): the client runs another version"
            )
    problem = check_weight(metrics, keys.NUM_EXAMPLES)
    if problem is not None:
        return problem
    count = metrics[keys.NUM_EXAMPLES]
    maximum = limits.max_examples_per_site
    if maximum is not None and count > maximum:
        return f"'{keys.NUM_EXAMPLES}' = {count:g} exceeds federated.screening.max_examples_per_site={maximum}"
    if pinned is not None and count > pinned:
        return f"'{keys.NUM_EXAMPLES}' = {count:g} exceeds the {pinned} samples of the site's first reply"
    for key, value in metrics.items():
        problem = _check_value(str(key), float(value), float(count), limits)
        if problem is not None:
            return problem
    return None


def update_distance(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Euclidean distance between a (checked) update and the global model over all float arrays."""
    total = 0.0
    for name, ref in reference.items():
        if ref.dtype.kind == "f" and ref.size:
            delta = (update[name] - ref).reshape(-1)  # (size,)
            total += float(np.dot(delta, delta))
    return math.sqrt(total)


def outlier_bounds(distances: Mapping[Hashable, float], factor: float) -> dict[Hashable, float]:
    """The replies whose distance exceeds ``factor`` times the median of the *other* replies' distances.

    Leave-one-out medians keep an outlier from raising its own bound: with two sites each is compared with
    the other, with three or more an outlier needs a majority of outliers to hide. With one site there is
    nothing to compare with, and nothing is returned.

    Returns
    -------
    dict
        Outlier key -> the bound it exceeds.
    """
    out = {}
    for key, distance in distances.items():
        others = [d for k, d in distances.items() if k != key]
        if others:
            bound = factor * statistics.median(others)
            if distance > bound:
                out[key] = bound
    return out


def clip_update(
    update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], scale: float
) -> dict[str, np.ndarray]:
    """``reference + scale * (update - reference)`` for float arrays (dtypes kept); other arrays as they are."""
    return {
        name: (ref + scale * (update[name] - ref)).astype(ref.dtype) if ref.dtype.kind == "f" else update[name]
        for name, ref in reference.items()
    }
