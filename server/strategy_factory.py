"""Build an aggregation strategy by name from the experiment's ``federated`` section."""

from __future__ import annotations

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
    Strategy,
)

from mtmedformer.config import ExperimentConfig
from mtmedformer.models import build_model
from strategies import keys
from strategies.bnp_matching import BNPMatching
from strategies.matching import MatchingConfig, build_spec
from strategies.metric_aggregation import aggregate_task_metrics


def aggregate_metric_records(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Flower ``*_metrics_aggr_fn``: per-task metrics weighted by per-task counts (see ``aggregate_task_metrics``)."""
    rows = [dict(next(iter(r.metric_records.values()))) for r in records]
    return MetricRecord(aggregate_task_metrics(rows))


def matching_strategy(experiment: ExperimentConfig, **common: object) -> BNPMatching:
    """The neuron-matching strategy with the permutation spec of the experiment's model."""
    with torch.device("meta"):  # the spec needs module structure only: no memory, no initialisation
        model = build_model(experiment.model, experiment.data.image_size, len(experiment.data.classes))
    m = experiment.federated.matching
    matching = MatchingConfig(prior_variance=m.prior_variance, iterations=m.iterations, max_sweeps=m.max_sweeps,
                              seed=m.seed, noise=m.noise, noise_floor=m.noise_floor, growth=m.growth,
                              gamma=m.gamma, growth_cap=m.growth_cap)
    return BNPMatching(build_spec(model), matching, **common)


def build_strategy(experiment: ExperimentConfig) -> Strategy:
    """The strategy named by ``cfg.strategy``, with sampling settings and task-aware metric aggregation.

    Raises
    ------
    ValueError
        If the name is unknown (the config layer normally rejects it first).
    """
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
    opts = cfg.strategy_options
    if cfg.strategy == "fedavg":
        return FedAvg(**common)
    if cfg.strategy == "fedprox":
        return FedProx(**common, proximal_mu=opts.proximal_mu)
    if cfg.strategy == "fedadam":
        return FedAdam(**common, eta=opts.server_lr, beta_1=opts.beta_1, beta_2=opts.beta_2, tau=opts.tau)
    if cfg.strategy == "fedyogi":
        return FedYogi(**common, eta=opts.server_lr, beta_1=opts.beta_1, beta_2=opts.beta_2, tau=opts.tau)
    if cfg.strategy == "fedavgm":
        return FedAvgM(**common, server_learning_rate=opts.server_lr, server_momentum=opts.server_momentum)
    if cfg.strategy == "fedmedian":
        return FedMedian(**common)
    if cfg.strategy == "fedtrimmedavg":
        return FedTrimmedAvg(**common, beta=opts.trim_beta)
    if cfg.strategy == "bnp_matching":
        return matching_strategy(experiment, **common)
    raise ValueError(f"unknown strategy '{cfg.strategy}'")
