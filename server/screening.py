"""Screening of the sites' replies: every reply is decoded once, checked once, and accepted or rejected.

:func:`screen_replies` is the one place where the server reads a reply: it decodes it into a
:class:`~strategies.replies.ScreenedReply` (model arrays as numpy, metrics as a dict) and checks that record
before any strategy sees it, so a failed, late or malformed reply never reaches the global model. Each
rejection carries a one-line reason that ends up in ``failures.jsonl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import Message

from strategies import keys
from strategies.packing import PackingError
from strategies.replies import ScreenedReply, decode_reply, site_name
from strategies.validation import check_update, check_weight

NO_REPLY = "no reply within the round timeout (site offline, dropped out, or too slow)"
NO_PRIOR_EVAL = "the training reply carries no evaluation of the received model (client app older than the server)"


@dataclass
class Screened:
    """The replies of one exchange, screened.

    Attributes
    ----------
    accepted
        Usable replies, sorted by site (aggregation sums in this order: rounds are bit-reproducible).
    failures
        One ``{"site", "node_id", "reason"}`` row per missing, failed or malformed reply.
    prior_failures
        With ``prior_eval``: accepted training replies whose evaluation of the received model is unusable, one
        row each (the update itself is accepted; its record's ``prior_eval`` is None).
    """

    accepted: list[ScreenedReply] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    prior_failures: list[dict[str, Any]] = field(default_factory=list)


def _failure(site: str, node: int, reason: str) -> dict[str, Any]:
    return {"site": site, "node_id": node, "reason": reason}


def _screen(reply: Message, site: str, reference: Mapping[str, np.ndarray] | None) -> ScreenedReply | str:
    """The decoded reply, or the reason it is unusable."""
    if reply.has_error():
        return f"client failed: {reply.error.reason}"
    if keys.METRICS not in reply.content:
        return "reply has no metric record"
    train = reference is not None
    if train and keys.ARRAYS not in reply.content:
        return "training reply has no model arrays"
    try:
        decoded = decode_reply(reply, site, with_arrays=train)
    except PackingError as err:
        return f"malformed packed arrays: {err}"
    problem = check_weight(decoded.metrics, keys.NUM_EXAMPLES)
    if problem is None and reference is not None:
        problem = check_update(decoded.arrays, reference)
    return decoded if problem is None else problem


def screen_replies(
    sent: list[Message],
    replies: Iterable[Message],
    node_sites: dict[int, str],
    reference: Mapping[str, np.ndarray] | None,
    prior_eval: bool = False,
) -> Screened:
    """Decode and check every reply; describe every missing, failed or malformed one.

    Parameters
    ----------
    sent
        The messages sent this exchange (their destinations that did not reply are reported as dropped).
    replies
        What came back within the round timeout.
    node_sites
        Node id -> site name, updated from the replies' ``site-name``.
    reference
        The global arrays sent for training, to check updates against (names, shapes, dtypes, finite values);
        None for evaluation replies, which carry metrics only.
    prior_eval
        The training messages asked the sites to evaluate the received model first (fused evaluation): check
        that evaluation too (``Screened.prior_failures``). Default False.

    Returns
    -------
    Screened
        Accepted records and failure rows.
    """
    out = Screened()
    replies = list(replies)
    replied = {int(r.metadata.src_node_id) for r in replies}
    for msg in sent:
        node = int(msg.metadata.dst_node_id)
        if node not in replied:
            out.failures.append(_failure(node_sites.get(node, f"node-{node}"), node, NO_REPLY))
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        named = site_name(reply)
        if named:
            node_sites[node] = named
        site = named or node_sites.get(node, f"node-{node}")
        screened = _screen(reply, site, reference)
        if isinstance(screened, str):
            out.failures.append(_failure(site, node, screened))
        else:
            out.accepted.append(screened)
    out.accepted.sort(key=lambda r: r.site)
    if prior_eval:
        for i, record in enumerate(out.accepted):
            problem = NO_PRIOR_EVAL if not record.prior_eval else check_weight(record.prior_eval, keys.NUM_EXAMPLES)
            if problem is not None:
                out.prior_failures.append(_failure(record.site, record.node_id, problem))
                out.accepted[i] = replace(record, prior_eval=None)
    return out
