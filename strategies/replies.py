"""One client reply as the server's aggregation sees it: decoded once, in one typed record.

A training reply crosses the wire as a Flower ``Message`` (model arrays packed, see :mod:`strategies.packing`).
The server's screening (``server/screening.py``) turns each reply into a :class:`ScreenedReply` exactly once:
the arrays decoded into numpy, the metrics into a plain dict, the site named. It checks that record and hands
the accepted ones to the strategy (:class:`strategies.server_strategy.ServerStrategy`); nothing after
screening decodes a reply again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message

from strategies import keys
from strategies.packing import decode_arrays


@dataclass(frozen=True)
class ScreenedReply:
    """A client's reply, decoded.

    Attributes
    ----------
    node_id
        The Flower node it came from.
    site
        The site's name (its ``site-name``, else the name the server knows for the node, else ``node-<id>``).
    metrics
        The reply's metric record: ``num-examples`` (samples, the aggregation weight), per-task counts, losses.
    arrays
        Model arrays by state-dict name (training replies; empty for evaluation replies).
    prior_eval
        With fused evaluation, the site's metrics of the model it received, before training; else None.
    """

    node_id: int
    site: str
    metrics: Mapping[str, float]
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    prior_eval: Mapping[str, float] | None = None

    @property
    def num_examples(self) -> int:
        """Samples the site trained (or evaluated) on: the weight of its update."""
        return int(self.metrics[keys.NUM_EXAMPLES])


def site_name(msg: Message) -> str | None:
    """The ``site-name`` a reply carries, or None."""
    if msg.has_content() and keys.SITE in msg.content:
        return str(msg.content[keys.SITE].get(keys.SITE_NAME, "")) or None
    return None


def decode_reply(msg: Message, site: str | None = None, with_arrays: bool = True) -> ScreenedReply:
    """Decode a (non-error) reply into a :class:`ScreenedReply`; nothing is checked here but the packing.

    Parameters
    ----------
    msg
        The reply.
    site
        The site's name; default the reply's ``site-name``, else ``node-<id>``.
    with_arrays
        Decode the model arrays (training replies). Default True.

    Raises
    ------
    KeyError
        If the reply has no metric record.
    PackingError
        If ``with_arrays`` and the reply has no model arrays or malformed packed arrays.
    """
    content = msg.content
    node = int(msg.metadata.src_node_id)
    return ScreenedReply(
        node_id=node,
        site=site or site_name(msg) or f"node-{node}",
        metrics=dict(content[keys.METRICS]),
        arrays=decode_arrays(content) if with_arrays else {},
        prior_eval=dict(content[keys.PRIOR_EVAL]) if keys.PRIOR_EVAL in content else None,
    )
