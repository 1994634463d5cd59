"""Aggregation of per-task client metrics, each weighted by the number of samples annotated for its task."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from mtmedformer import TASKS
from strategies.keys import NUM_EXAMPLES, task_count_key


def _weight_key(metric: str) -> str:
    task = metric.split("/", 1)[0]
    return task_count_key(task) if task in TASKS else NUM_EXAMPLES


def aggregate_task_metrics(records: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Weighted mean of every metric over clients.

    A metric named ``"<task>/<name>"`` is weighted by that client's ``"<task>/num-examples"``; other metrics by
    ``"num-examples"``. Counts are summed. NaN values (a metric undefined at a site, e.g. AUC on a
    single-class validation split) and zero-weight clients are left out; a metric undefined everywhere is NaN.

    Parameters
    ----------
    records
        One metric mapping per client.

    Returns
    -------
    dict
        Aggregated metrics, with the same keys as the inputs.
    """
    records = list(records)
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    out: dict[str, float] = {}
    for key in keys:
        if key == NUM_EXAMPLES or key.endswith("/num-examples"):
            out[key] = float(sum(float(r.get(key, 0.0)) for r in records))
            continue
        weight_key = _weight_key(key)
        total, weight = 0.0, 0.0
        for record in records:
            value, w = record.get(key), float(record.get(weight_key, 0.0))
            if value is None or w <= 0 or not math.isfinite(float(value)):
                continue
            total += float(value) * w
            weight += w
        out[key] = total / weight if weight > 0 else math.nan
    return out
