"""Flower strategy that aggregates multi-task ViT weights by Bayesian nonparametric neuron matching."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies import keys
from strategies.matching import ClientUpdate, MatchingConfig, PermutationSpec, match_and_merge
from strategies.packing import to_array
from strategies.replies import ScreenedReply, decode_reply

log = logging.getLogger(__name__)


class BNPMatching(FedAvg):
    """FedAvg whose weight aggregation first matches hidden units across clients (PFNM/FedMA for ViTs).

    Only the aggregation differs from :class:`flwr.serverapp.strategy.FedAvg`: the client state dicts are
    aligned to the previous global model's frame (residual stream, MLP units, heads, within-head q/k and v/o,
    decoder channels) and merged by the PFNM posterior mean (Yurochkin et al., ICML 2019; Wang et al., ICLR
    2020). The encoder is averaged over all clients weighted by ``num-examples``; each task head only over the
    clients that trained that task, weighted by that task's count. Matching needs every client's weights in the
    clear: it cannot run under secure aggregation.

    :meth:`aggregate_replies` works on replies the server has already screened and decoded (the round loop of
    ``server/rounds.py`` calls it); :meth:`aggregate_train` is the same for Flower's own ``start`` loop.

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
        """FedAvg's training messages; remember the global model sent (reference frame and prior centre)."""
        self.previous = arrays.to_torch_state_dict()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_replies(
        self, server_round: int, replies: Sequence[ScreenedReply]
    ) -> tuple[dict[str, np.ndarray] | None, dict[str, float]]:
        """Match and merge the replies' weights.

        Returns
        -------
        arrays : dict or None
            The merged model by state-dict name, or None without replies.
        diagnostics : dict
            ``matching/...`` numbers of :meth:`strategies.matching.MergeDiagnostics.summary`.
        """
        if not replies:
            return None, {}
        updates = {
            r.site: ClientUpdate(r.arrays, int(r.metrics[self.weighted_by_key]), keys.task_counts(r.metrics))
            for r in replies
        }
        result = match_and_merge(updates, self.spec, previous=self.previous, config=self.matching)
        self.last_diagnostics = {k: float(v) for k, v in result.diagnostics.summary().items()}
        log.info(
            "round %d: matched %d clients in %.1fs; moved fractions %s", server_round, len(updates),
            result.diagnostics.seconds,
            {k: round(v, 3) for k, v in self.last_diagnostics.items() if "moved" in k},
        )
        return {k: v.detach().cpu().numpy() for k, v in result.state_dict.items()}, dict(self.last_diagnostics)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Match and merge the replies' weights; aggregate their metrics as FedAvg does, plus diagnostics."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        arrays, diagnostics = self.aggregate_replies(server_round, [decode_reply(msg) for msg in valid])
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        metrics.update(diagnostics)
        return ArrayRecord({k: to_array(v) for k, v in (arrays or {}).items()}), metrics
