"""ClientApp side of secure aggregation: Flower's SecAgg+ mod in front of the project's own training handler.

Flower 1.42's ``secaggplus_mod`` speaks the legacy record layout: it reads the training reply as a ``FitRes``
(``fitres.parameters``, ``fitres.num_examples``, ...) and the server's ``SecAggPlusWorkflow`` sends a ``FitIns``
(``fitins.parameters``, ``fitins.config``). :func:`secure_aggregation_mod` runs that mod only for the messages
of the protocol (they carry its ``secaggplus_configs`` record; every other message passes through unchanged),
and translates, for the one stage that trains, between that layout and the project's (``arrays``, ``config``
named by :mod:`strategies.keys`):

- in: the global weights, unnamed and in state-dict order, get their names from the config entry
  :data:`strategies.keys.SECAGG_ARRAY_NAMES`;
- out: the site sends its **update** ``local - global`` (after client-side DP, when configured), not its
  weights: updates are small, so they fit SecAgg+'s quantisation range (``clipping_range``) with little
  quantisation error; the server adds the aggregated update to the global model. Its metrics stay in the clear.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat

from strategies import keys

Handler = Callable[[Message, Context], Message]


def is_secure_aggregation(msg: Message) -> bool:
    """True for the training messages of the SecAgg+ protocol (they carry its config record)."""
    return (
        msg.metadata.message_type == MessageType.TRAIN and msg.has_content()
        and RECORD_KEY_CONFIGS in msg.content.config_records
    )  # fmt: skip


def secure_aggregation_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """ClientApp mod: run SecAgg+ for its messages, pass every other message through."""
    if not is_secure_aggregation(msg):
        return call_next(msg, context)
    # The protocol pops entries of its config record: work on this message's own copy (in process, the server
    # may hand every node the same RecordDict).
    msg.content = RecordDict(
        {k: ConfigRecord(dict(v)) if isinstance(v, ConfigRecord) else v for k, v in msg.content.items()}
    )
    return secaggplus_mod(msg, context, lambda inner, ctx: _train_as_fitres(inner, ctx, call_next))


def _check_range(update: list[np.ndarray], num_examples: int, context: Context) -> None:
    """Refuse an update that SecAgg+ would silently clip or overflow (its bounds are in the protocol's state)."""
    state = context.state.config_records[RECORD_KEY_STATE]
    max_weight, clipping_range = float(state["max_weight"]), float(state["clipping_range"])
    if num_examples > max_weight:
        raise ValueError(
            f"secure aggregation: this site's num-examples ({num_examples}) exceeds federated.privacy.secagg."
            f"max_weight ({max_weight:g}); raise max_weight to at least the largest site's training images"
        )
    largest = max((float(np.abs(u).max()) for u in update if u.size), default=0.0) * num_examples / max_weight
    if largest > clipping_range:
        raise ValueError(
            f"secure aggregation: a weighted update coordinate ({largest:.3g}) exceeds federated.privacy.secagg."
            f"clipping_range ({clipping_range:g}) and would be clipped; raise clipping_range"
        )


def _train_as_fitres(msg: Message, context: Context, call_next: Handler) -> Message:
    """Run the project's training handler on a FitIns message; reply with a FitRes of the update."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    names = str(config.pop(keys.SECAGG_ARRAY_NAMES)).split("\n")
    received = parameters_to_ndarrays(fitins.parameters)
    if len(names) != len(received):
        raise ValueError(f"secure aggregation: {len(received)} arrays arrived with {len(names)} names")
    arrays = ArrayRecord({name: Array(array) for name, array in zip(names, received, strict=True)})
    msg.content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: ConfigRecord(config)})  # what the handler reads
    reply = call_next(msg, context)
    if reply.has_error():
        raise RuntimeError(f"local training failed: {reply.error.reason}")
    local = reply.content[keys.ARRAYS]
    update = [np.asarray(local[name].numpy(), dtype=np.float64) - received[i] for i, name in enumerate(names)]
    metrics = dict(reply.content[keys.METRICS])
    _check_range(update, int(metrics[keys.NUM_EXAMPLES]), context)
    metrics[keys.SITE_NAME] = str(reply.content[keys.SITE][keys.SITE_NAME])
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters(update),
        num_examples=int(metrics[keys.NUM_EXAMPLES]),
        metrics=metrics,
    )
    return Message(content=compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)
