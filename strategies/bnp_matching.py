"""Flower strategy that aggregates multi-task ViT weights by Bayesian nonparametric neuron matching."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategies import keys
from strategies.matching import (
    ClientUpdate,
    MatchingConfig,
    PermutationSpec,
    client_slice,
    default_index_maps,
    growable_axes,
    match_and_merge,
    widths_of,
)
from strategies.slice_book import SliceBook

log = logging.getLogger(__name__)


class BNPMatching(FedAvg):
    """FedAvg whose weight aggregation first matches hidden units across clients (PFNM/FedMA for ViTs).

    Only :meth:`aggregate_train` differs from :class:`flwr.serverapp.strategy.FedAvg`: the client state dicts
    are aligned to the previous global model's frame (residual stream, MLP units, heads, within-head q/k and
    v/o, decoder channels) and merged by the PFNM posterior mean (Yurochkin et al., ICML 2019; Wang et al.,
    ICLR 2020). The encoder is averaged over all clients weighted by ``num-examples``; each task head only
    over the clients that trained that task, weighted by that task's count. Matching needs every client's
    weights in the clear: it cannot run under secure aggregation.

    With ``matching.growth`` the global model may hold more MLP hidden units and decoder hidden channels than the
    clients (PFNM's new units, :mod:`strategies.matching.growth`): :meth:`configure_train` and
    :meth:`configure_evaluate` then send every node the configured-width slice its site holds (a default slice
    for a site not seen yet), and the sites' index maps are part of :meth:`state_dict`.

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
        self.book = SliceBook(spec)

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info("BNPMatching: %s", self.matching)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model sent this round (reference frame, prior centre); with growth send slices."""
        self.previous = arrays.to_torch_state_dict()
        messages = super().configure_train(server_round, arrays, config, grid)
        if not self.matching.growth:
            return messages
        self.book.sent = {}
        return self._sliced(messages, self.previous, record=True)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluation messages; with growth each node gets its own configured-width slice."""
        messages = super().configure_evaluate(server_round, arrays, config, grid)
        if not self.matching.growth:
            return messages
        return self._sliced(messages, arrays.to_torch_state_dict(), record=False)

    def _sliced(self, messages: Iterable[Message], global_state: dict, record: bool) -> list[Message]:
        """One message per node carrying the slice of ``global_state`` its site holds."""
        widths = widths_of(global_state, self.spec)
        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            maps = self.book.maps_for_node(node, widths)
            if record:
                self.book.record_sent(node, maps)
            content = RecordDict(
                {
                    self.arrayrecord_key: ArrayRecord(client_slice(global_state, self.spec, maps)),
                    self.configrecord_key: msg.content[self.configrecord_key],
                }
            )
            out.append(Message(content=content, message_type=msg.metadata.message_type, dst_node_id=node))
        return out

    def reply_reference(self, global_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arrays of the shapes clients reply with: the configured width (a default slice of a grown global)."""
        if not self.matching.growth:
            return global_state
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in global_state.items()}
        maps = default_index_maps(self.spec, widths_of(state, self.spec))
        return {k: v.numpy() for k, v in client_slice(state, self.spec, maps).items()}

    def growable_axes(self) -> dict[str, int]:
        """Key -> the axis whose length may grow between rounds (empty without growth)."""
        if not self.matching.growth:
            return {}
        return {name: where.axis for name, where in growable_axes(self.spec).items()}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Match and merge the replies' weights; aggregate their metrics as FedAvg does, plus diagnostics."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        updates: dict[str, ClientUpdate] = {}
        nodes: dict[str, int] = {}
        for msg in valid:
            metrics = next(iter(msg.content.metric_records.values()))
            site = msg.content[keys.SITE][keys.SITE_NAME] if keys.SITE in msg.content else None
            client_id = str(site or msg.metadata.src_node_id)
            nodes[client_id] = int(msg.metadata.src_node_id)
            state = next(iter(msg.content.array_records.values())).to_torch_state_dict()
            updates[client_id] = ClientUpdate(state, int(metrics[self.weighted_by_key]), keys.task_counts(metrics))
        sent = {c: self.book.maps_of_reply(n, c) for c, n in nodes.items()} if self.matching.growth else {}
        result = match_and_merge(
            updates, self.spec, previous=self.previous, config=self.matching,
            index_maps={c: m for c, m in sent.items() if m is not None},
        )
        for client_id, maps in result.index_maps.items():
            self.book.learn(nodes[client_id], client_id, maps)
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
        """Cross-round state beyond the global model (which the server checkpoints): with growth, the sites' maps."""
        return self.book.state_dict() if self.matching.growth else {}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.book.load_state_dict(state)
