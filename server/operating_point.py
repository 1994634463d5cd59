"""The federated global model's classification threshold, from the thresholds the sites chose on validation.

Each site chooses the binary classifier's class-1 probability threshold on its own validation split
(``train.operating_point``, :func:`mtmedformer.metrics.choose_operating_point`) and reports it with its
validation counts; :func:`strategies.metric_aggregation.aggregate_task_metrics` averages the sites'
``classification/threshold`` weighted by their labelled validation samples (``classification/num-examples``),
leaving out the sites that could not choose (NaN: a single class). The server stores that mean in the round's
checkpoints and sends it with the final test evaluation, so the test split is scored at a threshold chosen on
validation data only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from mtmedformer.config import ExperimentConfig
from mtmedformer.metrics import OperatingPoint
from server.results import AGGREGATE


def federated_operating_point(metrics: Mapping[str, Any], cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The operating point of a round's global model from its aggregated validation ``metrics``, for a checkpoint.

    Why a count-weighted mean of the sites' thresholds: the threshold that is best on the pooled validation
    set would need every site's scores and labels at the server, which the federation does not move. The mean
    needs one number per site, and weighting it by the site's labelled validation samples (as every other
    metric and FedAvg are weighted) gives a site with more samples, whose chosen threshold varies less, more
    say. It is an approximation: with sites whose score distributions differ, the mean of per-site optima is not
    the optimum of the pooled ROC curve.

    Returns
    -------
    dict or None
        ``{"threshold", "rule", "fallback": False}``, or None when no site chose a threshold (no binary
        classifier, every site a single class): such checkpoints use ``train.operating_point.threshold``.
    """
    threshold = metrics.get("classification/threshold")
    if threshold is None or not math.isfinite(float(threshold)):
        return None
    return OperatingPoint(float(threshold), cfg.train.operating_point.rule).as_dict()


def validation_threshold(history: Iterable[Mapping[str, Any]], rnd: int) -> float | None:
    """The aggregated validation threshold of round ``rnd``'s global model in the run ``history``, or None."""
    for row in history:
        if row.get("round") == rnd and row.get("phase") == "val" and row.get("site") == AGGREGATE:
            value = row.get("classification/threshold")
            if value is not None and math.isfinite(float(value)):
                return float(value)
    return None
