"""Build the aggregation strategy of an experiment from one table: strategy name -> builder.

:data:`BUILDERS` names exactly the strategies of :data:`mtmedformer.config.federated.STRATEGY_SETTINGS` (the
names ``federated.strategy`` accepts; checked when this module is imported). Each builder gets Flower's
sampling and record-key settings and exactly the settings the config table lists for its strategy, and
returns the strategy wrapped in its :class:`~strategies.server_strategy.ServerStrategy` adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
)

from mtmedformer.config import ExperimentConfig
from mtmedformer.config.federated import STRATEGY_SETTINGS
from mtmedformer.models import build_model
from strategies import keys
from strategies.bnp_matching import BNPMatching
from strategies.matching import build_spec
from strategies.metric_aggregation import aggregate_task_metrics
from strategies.server_strategy import CarriedArrays, DirectAggregation, ServerStrategy

Builder = Callable[[ExperimentConfig, dict[str, Any], Mapping[str, Any]], ServerStrategy]
"""``(experiment, flower_kwargs, settings) -> strategy``; ``settings`` holds what STRATEGY_SETTINGS lists."""


def aggregate_metric_records(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Flower ``*_metrics_aggr_fn``: per-task metrics weighted by per-task counts (see ``aggregate_task_metrics``)."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    return MetricRecord(aggregate_task_metrics(rows))


def _adam_kwargs(s: Mapping[str, Any]) -> dict[str, Any]:
    return {"eta": s["server_lr"], "beta_1": s["beta_1"], "beta_2": s["beta_2"], "tau": s["tau"]}


def _fedavgm(_: ExperimentConfig, common: dict[str, Any], s: Mapping[str, Any]) -> ServerStrategy:
    flower = FedAvgM(**common, server_learning_rate=s["server_lr"], server_momentum=s["server_momentum"])
    return CarriedArrays(flower, ("momentum_vector",))


def _bnp_matching(experiment: ExperimentConfig, common: dict[str, Any], s: Mapping[str, Any]) -> ServerStrategy:
    """The neuron-matching strategy with the permutation spec of the experiment's model."""
    with torch.device("meta"):  # the spec needs module structure only: no memory, no initialisation
        model = build_model(experiment.model, experiment.data.image_size, len(experiment.data.classes))
    return DirectAggregation(BNPMatching(build_spec(model), s["matching"], **common))


BUILDERS: dict[str, Builder] = {
    "fedavg": lambda _, common, s: ServerStrategy(FedAvg(**common)),
    "fedprox": lambda _, common, s: ServerStrategy(FedProx(**common, proximal_mu=s["proximal_mu"])),
    # FedOpt keeps its moments m_t, v_t across rounds.
    "fedadam": lambda _, common, s: CarriedArrays(FedAdam(**common, **_adam_kwargs(s)), ("m_t", "v_t")),
    "fedyogi": lambda _, common, s: CarriedArrays(FedYogi(**common, **_adam_kwargs(s)), ("m_t", "v_t")),
    "fedavgm": _fedavgm,
    "fedmedian": lambda _, common, s: ServerStrategy(FedMedian(**common)),
    "fedtrimmedavg": lambda _, common, s: ServerStrategy(FedTrimmedAvg(**common, beta=s["trim_beta"])),
    "bnp_matching": _bnp_matching,
}

if set(BUILDERS) != set(STRATEGY_SETTINGS):  # one list of strategies: the config's
    raise ImportError(
        f"server/strategy_factory.py builds {sorted(BUILDERS)} but mtmedformer/config/federated.py's "
        f"STRATEGY_SETTINGS names {sorted(STRATEGY_SETTINGS)}: give every strategy an entry in both tables"
    )


def build_strategy(experiment: ExperimentConfig) -> ServerStrategy:
    """The strategy named by ``federated.strategy``, with sampling settings and task-aware metric aggregation."""
    cfg = experiment.federated
    common = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": cfg.min_train_nodes,
        "min_evaluate_nodes": cfg.min_evaluate_nodes,
        "min_available_nodes": cfg.min_available_nodes,
        "weighted_by_key": keys.NUM_EXAMPLES,
        "arrayrecord_key": keys.ARRAYS,
        "configrecord_key": keys.CONFIG,
        "train_metrics_aggr_fn": aggregate_metric_records,
        "evaluate_metrics_aggr_fn": aggregate_metric_records,
    }
    return BUILDERS[cfg.strategy](experiment, common, cfg.strategy_settings())
