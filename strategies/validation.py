"""Screening of client updates before aggregation: a malformed update never reaches the global model."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def check_update(update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> str | None:
    """Say what is wrong with a client's state dict compared with the global one, or return None.

    Parameters
    ----------
    update
        The client's arrays by parameter name.
    reference
        The global model's arrays the client was sent.

    Returns
    -------
    str or None
        A one-line reason (missing/extra keys, a wrong shape or dtype, NaN/Inf values), or None when the update
        is well-formed.
    """
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if extra:
            parts.append(f"unexpected {len(extra)} keys (e.g. {extra[:3]})")
        return "; ".join(parts) + ": the client runs a different model config or version"
    for name, ref in reference.items():
        value = update[name]
        if tuple(value.shape) != tuple(ref.shape):
            return f"'{name}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if value.dtype != ref.dtype:
            return f"'{name}' has dtype {value.dtype}, expected {ref.dtype}"
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(value.size - np.isfinite(value).sum())
            return f"'{name}' holds {bad} NaN/Inf values: local training diverged"
    return None


def check_weight(metrics: Mapping[str, object], key: str) -> str | None:
    """Say what is wrong with a reply's sample-count weight ``metrics[key]``, or return None."""
    if key not in metrics:
        return f"metric record lacks '{key}'"
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return f"'{key}' must be a positive number of samples, got {value!r}"
    return None
