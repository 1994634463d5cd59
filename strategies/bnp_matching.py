"""Flower strategy that aggregates multi-task ViT weights by Bayesian nonparametric neuron matching."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies import keys
from strategies.matching import ClientUpdate, MatchingConfig, PermutationSpec, match_and_merge

log = logging.getLogger(__name__)


class BNPMatching(FedAvg):
    """FedAvg whose weight aggregation first matches hidden units across clients (PFNM/FedMA for ViTs).

    Only :meth:`aggregate_train` differs from :class:`flwr.serverapp.strategy.FedAvg`: the client state dicts
    are aligned to the previous global model's frame (residual stream, MLP units, heads, within-head q/k and
    v/o, decoder channels) and merged by the PFNM posterior mean (Yurochkin et al., ICML 2019; Wang et al.,
    ICLR 2020). The encoder is averaged over all clients weighted by ``num-examples``; each task head only
    over the clients that trained that task, weighted by that task's count. Matching needs every client's
    weights in the clear: it cannot run under secure aggregation.

    Parameters
    ----------
    spec
        Permutation spec of the global model (:func:`strategies.matching.build_spec`).
    matching
        Matching settings; default :class:`~strategies.matching.MatchingConfig`.
    **kwargs
        FedAvg's sampling and key settings.
    """

    def __init__(self, spec: PermutationSpec, matching: MatchingConfig | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.matching = matching or MatchingConfig()
        self.previous: dict | None = None
        self.last_diagnostics: dict[str, float] = {}

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info("BNPMatching: %s", self.matching)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent this round: it is the reference frame and the prior's centre."""
        self.previous = arrays.to_torch_state_dict()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Match and merge the replies' weights; aggregate their metrics as FedAvg does, plus diagnostics."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        updates: dict[str, ClientUpdate] = {}
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            site = msg.content[keys.SITE][keys.SITE_NAME] if keys.SITE in msg.content else None
            client_id = str(site or msg.metadata.src_node_id)
            state = next(iter(msg.content.array_records.values())).to_torch_state_dict()
            updates[client_id] = ClientUpdate(state, int(metrics[self.weighted_by_key]), keys.task_counts(metrics))
        result = match_and_merge(updates, self.spec, previous=self.previous, config=self.matching)
        self.last_diagnostics = {k: float(v) for k, v in result.diagnostics.summary().items()}
        log.info(
            "round %d: matched %d clients in %.1fs; moved fractions %s", server_round, len(updates),
            result.diagnostics.seconds,
            {k: round(v, 3) for k, v in self.last_diagnostics.items() if "moved" in k},
        )
        arrays = ArrayRecord({k: Array(v.detach().cpu().numpy()) for k, v in result.state_dict.items()})
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        metrics.update(self.last_diagnostics)
        return arrays, metrics

    def state_dict(self) -> dict:
        """Cross-round state: none beyond the global model, which the server checkpoints itself."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
