"""The strategy as the server's round loop calls it: an explicit, typed extension point around a Flower strategy.

The round loop (``server/rounds.py``) screens every reply itself and checkpoints after every round, so it
needs three things from a strategy beyond Flower's ``configure_*`` hooks: aggregation of the *screened*
replies (:class:`~strategies.replies.ScreenedReply`, decoded once), and the strategy's cross-round state to
save and restore. :class:`ServerStrategy` is that interface, with defaults that suit any Flower Message-API
strategy; the two adapters below cover the strategies that need more:

- :class:`CarriedArrays`: Flower strategies whose server optimizer keeps arrays across rounds (FedOpt's
  moments ``m_t``/``v_t`` for FedAdam and FedYogi, FedAvgM's ``momentum_vector``) save and restore them;
- :class:`DirectAggregation`: a strategy that aggregates screened replies itself
  (:class:`~strategies.bnp_matching.BNPMatching`) gets them without any Flower ``Message`` being rebuilt.

To add a strategy, give it a builder in ``server/strategy_factory.py`` that wraps it in one of these classes
(or a subclass overriding :meth:`ServerStrategy.aggregate_train`, :meth:`ServerStrategy.state_dict` and
:meth:`ServerStrategy.load_state_dict`), and its name and settings in
:data:`mtmedformer.config.federated.STRATEGY_SETTINGS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from strategies import keys
from strategies.packing import array_view, to_array
from strategies.replies import ScreenedReply


@dataclass(frozen=True)
class Aggregate:
    """What one round's aggregation produced.

    Attributes
    ----------
    arrays
        The new global model's arrays by name (dtypes as the strategy computed them; possibly read-only), or
        None when the strategy made none.
    metrics
        The strategy's metrics of the round (e.g. matching diagnostics ``matching/...``); may repeat the clients'
        aggregated metrics, which the round loop computes itself.
    """

    arrays: dict[str, np.ndarray] | None
    metrics: dict[str, Any] = field(default_factory=dict)


def as_message(reply: ScreenedReply) -> Message:
    """A Flower training reply carrying ``reply``'s arrays and metrics, for a strategy that reads Messages."""
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({name: to_array(value) for name, value in reply.arrays.items()}),
            keys.METRICS: MetricRecord(dict(reply.metrics)),
        }
    )
    metadata = Metadata(
        run_id=0, message_id="", src_node_id=reply.node_id, dst_node_id=0, reply_to_message_id="", group_id="",
        created_at=0.0, ttl=0.0, message_type=MessageType.TRAIN,
    )
    return Message(content=content, metadata=metadata)


class ServerStrategy:
    """A Flower strategy as the round loop uses it; every hook has a default that fits Flower's strategies.

    Parameters
    ----------
    flower
        The Flower Message-API strategy (e.g. :class:`flwr.serverapp.strategy.FedAvg`): it samples the nodes
        and builds the messages (``configure_train``, ``configure_evaluate``) and aggregates.
    """

    def __init__(self, flower: Strategy) -> None:
        self.flower = flower

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """The training messages of round ``server_round`` (Flower's ``configure_train``)."""
        return list(self.flower.configure_train(server_round, arrays, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """The evaluation messages of round ``server_round`` (Flower's ``configure_evaluate``)."""
        return list(self.flower.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Sequence[ScreenedReply]) -> Aggregate:
        """Aggregate the accepted training replies of round ``server_round``.

        Default: Flower's ``aggregate_train`` on one training Message per reply, built once from the decoded
        arrays (:func:`as_message`); its result read as numpy without a copy (read-only arrays).
        """
        arrays, metrics = self.flower.aggregate_train(server_round, [as_message(r) for r in replies])
        decoded = None if arrays is None else {name: array_view(array) for name, array in arrays.items()}
        return Aggregate(decoded, dict(metrics or {}))

    def state_dict(self) -> dict[str, Any]:
        """State the strategy carries from round to round, as tensors and plain types; default none.

        The server saves it with ``torch.save`` after every round (and loads it with ``weights_only=True``),
        next to the global model, which is not part of it.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run is resumed; default: nothing to restore."""


class CarriedArrays(ServerStrategy):
    """A Flower strategy whose server optimizer keeps numpy arrays in attributes across rounds.

    Parameters
    ----------
    flower
        The strategy (e.g. FedAdam, whose moments are ``m_t`` and ``v_t``).
    attributes
        The attributes holding that state: dicts or lists of numpy arrays, or None before the first round.
    """

    def __init__(self, flower: Strategy, attributes: Iterable[str]) -> None:
        super().__init__(flower)
        self.attributes = tuple(attributes)

    def state_dict(self) -> dict[str, Any]:
        """The attributes that are set, with every numpy array (or scalar) as a tensor."""
        return {
            name: _to_torch(getattr(self.flower, name))
            for name in self.attributes
            if getattr(self.flower, name, None) is not None
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Set every attribute of ``state`` on the strategy, with tensors back as numpy arrays."""
        for name, value in state.items():
            setattr(self.flower, name, _to_numpy(value))


@runtime_checkable
class AggregatesReplies(Protocol):
    """A Flower strategy that can also aggregate screened replies directly (no Messages)."""

    def aggregate_replies(
        self, server_round: int, replies: Sequence[ScreenedReply]
    ) -> tuple[dict[str, np.ndarray] | None, dict[str, float]]:
        """New global arrays (or None) and the strategy's own metrics."""
        ...


class DirectAggregation(ServerStrategy):
    """A strategy that aggregates the screened replies itself, through its ``aggregate_replies``.

    Parameters
    ----------
    flower
        A Flower strategy that also implements :class:`AggregatesReplies`.

    Raises
    ------
    TypeError
        If ``flower`` has no ``aggregate_replies``.
    """

    def __init__(self, flower: Strategy) -> None:
        if not isinstance(flower, AggregatesReplies):
            raise TypeError(f"{type(flower).__name__} has no aggregate_replies(server_round, replies)")
        super().__init__(flower)
        self.aggregator: AggregatesReplies = flower

    def aggregate_train(self, server_round: int, replies: Sequence[ScreenedReply]) -> Aggregate:
        """The strategy's ``aggregate_replies`` on the screened replies."""
        arrays, metrics = self.aggregator.aggregate_replies(server_round, replies)
        return Aggregate(arrays, dict(metrics))


def _to_torch(value: Any) -> Any:
    # numpy scalars too (FedOpt's moments of a 0-d buffer): ``torch.load(weights_only=True)`` refuses them.
    if isinstance(value, np.ndarray | np.generic):
        return torch.from_numpy(np.array(value, order="C"))  # a C-ordered copy of the same shape (0-d stays 0-d)
    if isinstance(value, dict):
        return {k: _to_torch(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_torch(v) for v in value]
    return value


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value
