"""Server side of secure aggregation: one training round through Flower's SecAgg+ workflow.

Flower 1.42's :class:`~flwr.server.workflow.SecAggPlusWorkflow` drives a *legacy* strategy
(``configure_fit``/``aggregate_fit`` on ``FitIns``/``FitRes``) inside a ``LegacyContext``; it cannot run a
Message-API strategy. :func:`secure_round` gives it :class:`_Relay`, a legacy strategy that hands out the FitIns
of the nodes the project's strategy sampled and keeps what the protocol reveals: the weighted mean of the sites'
updates (the workflow unmasks the sum and divides by the summed weights) and each site's FitRes metrics, which
are not masked. The ClientApp side is ``client/secure_aggregation.py``.

What the server cannot do here, by design: screen one site's update (it never sees one), so a site can bias the
mean within the protocol's ``clipping_range``; only the aggregate is checked (``strategies/validation.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, FitRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from mtmedformer.config.privacy import SecAggConfig
from strategies import keys
from strategies.replies import ScreenedReply

NOT_IN_SUM = "its masked update is not in the secure sum (it failed, dropped out, or the protocol stopped)"


@dataclass(frozen=True)
class _Node:
    """What the workflow needs of a legacy ClientProxy: the node id."""

    node_id: int


@dataclass
class _Relay:
    """The legacy strategy the workflow drives: fixed FitIns for the sampled nodes; it keeps the unmasked mean."""

    fitins: dict[int, FitIns]
    results: list[tuple[Any, FitRes]] = field(default_factory=list)
    mean: list[np.ndarray] | None = None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[_Node, FitIns]]:
        """The sampled nodes and their instructions."""
        return [(_Node(node), fitins) for node, fitins in self.fitins.items()]

    def aggregate_fit(self, server_round: int, results: list[tuple[Any, FitRes]], failures: list[Any]) -> tuple:
        """Keep the results; every one carries the same unmasked weighted mean as its parameters."""
        self.results = list(results)
        if results:
            self.mean = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}


@dataclass(frozen=True)
class SecureRound:
    """What one secure round revealed.

    Attributes
    ----------
    update
        The weighted mean of the sites' updates by state-dict name (None when the protocol did not finish).
    sites
        The sites whose update is in the mean: their metrics, no arrays.
    failures
        One ``{"site", "node_id", "reason"}`` row per sampled node whose update is not in the mean.
    """

    update: dict[str, np.ndarray] | None
    sites: list[ScreenedReply]
    failures: list[dict[str, Any]]


def _fitins(message: Message, global_state: Mapping[str, np.ndarray]) -> FitIns:
    config = dict(message.content[keys.CONFIG])
    config[keys.SECAGG_ARRAY_NAMES] = "\n".join(global_state)
    return FitIns(parameters=ndarrays_to_parameters(list(global_state.values())), config=config)


def _site_reply(node: int, fitres: FitRes) -> ScreenedReply:
    metrics = {k: float(v) for k, v in fitres.metrics.items() if k != keys.SITE_NAME}
    return ScreenedReply(node_id=node, site=str(fitres.metrics.get(keys.SITE_NAME, f"node-{node}")), metrics=metrics)


def secure_round(
    grid: Grid,
    sent: Sequence[Message],
    global_state: Mapping[str, np.ndarray],
    settings: SecAggConfig,
    server_round: int,
    node_sites: Mapping[int, str],
    timeout: float | None,
) -> SecureRound:
    """Run SecAgg+ with the nodes and training config of ``sent`` (the strategy's ``configure_train`` messages).

    Parameters
    ----------
    grid
        Flower grid to reach the sites.
    sent
        The strategy's training messages: their destinations are the sampled nodes, their config record is sent.
    global_state
        The global model (numpy, state-dict order): the sites train from it and send ``local - global``.
    settings
        ``federated.privacy.secagg``.
    server_round
        The round number.
    node_sites
        Site names known for node ids (for the failure rows).
    timeout
        Seconds to wait for the replies of each of the protocol's four exchanges.
    """
    relay = _Relay({int(m.metadata.dst_node_id): _fitins(m, global_state) for m in sent})
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=relay)  # type: ignore[arg-type]  # a duck-typed legacy strategy
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(list(global_state.values())), keep_input=True
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
    workflow = SecAggPlusWorkflow(
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=settings.max_weight,
        clipping_range=settings.clipping_range,
        timeout=timeout,
    )
    workflow(grid, context)
    in_sum = {node.node_id: fitres for node, fitres in relay.results} if relay.mean is not None else {}
    sites = [_site_reply(node, fitres) for node, fitres in sorted(in_sum.items())]
    failures = [
        {"site": node_sites.get(node, f"node-{node}"), "node_id": node, "reason": NOT_IN_SUM}
        for node in relay.fitins
        if node not in in_sum
    ]
    update = dict(zip(global_state, relay.mean, strict=True)) if relay.mean is not None else None
    return SecureRound(update=update, sites=sites, failures=failures)
