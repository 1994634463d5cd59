"""Screening of the sites' replies: every reply is decoded once, checked once, and accepted or rejected.

:func:`screen_replies` is the one place where the server reads a reply: it decodes it into a
:class:`~strategies.replies.ScreenedReply` (model arrays as numpy, metrics as a dict) and checks that record
before any strategy sees it, so a failed, late, malformed or absurd reply never reaches the global model or
the aggregated metrics. Each rejection carries a one-line reason that ends up in ``failures.jsonl``. Nothing
a peer sends makes screening raise: besides the specific checks, any exception while screening one reply
becomes that reply's rejection.

The checks, in order (``docs/security.md`` lists them with their tests):

1. identity: the reply comes from a node the exchange sent to, answers that node's message, and is its only
   reply; the site name it claims is the one its node already holds (a new node may not take a name another
   node of the exchange holds, and two new nodes claiming one name are both refused);
2. structure: exactly one MetricRecord (``metrics``), one ArrayRecord (``arrays``) for training and none for
   evaluation, no other records than the site name, the arrays layout and the fused evaluation;
3. content: arrays decoded and checked against their headers and the layout (:mod:`strategies.packing`),
   metrics checked for their key set, whole-number counts within the declared maximum and the site's first
   claim, values within their ranges, model arrays against the global model (names, shapes, dtypes, finite
   and bounded values) (:mod:`strategies.validation`);
4. influence: an update far further from the global model than the other sites' is rejected or clipped
   (``federated.screening.outlier_factor``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID

from mtmedformer.config.federated import ScreeningConfig
from strategies import keys
from strategies.packing import LAYOUT, PackingError, is_packed
from strategies.replies import ScreenedReply, decode_reply
from strategies.validation import (
    MetricKeys,
    check_metrics,
    check_update,
    clip_update,
    outlier_bounds,
    update_distance,
)

log = logging.getLogger(__name__)

NO_REPLY = "no reply within the round timeout (site offline, dropped out, or too slow)"
# Flower's SuperLink answers a message whose node went offline with an error reply of its own, sent from this
# node id; it is that site's failure, not a reply from a stranger.
SUPERLINK_NODE = SUPERLINK_NODE_ID
NO_PRIOR_EVAL = "the training reply carries no evaluation of the received model (client app older than the server)"
_MAX_REASON = 4000  # characters of a reason kept (a peer's error text is its own; its head and tail are kept)
_MAX_NAME = 100  # characters of a site name


@dataclass(frozen=True)
class Expectations:
    """What the server knows about the replies of one exchange before they arrive.

    Attributes
    ----------
    metrics
        The metric keys every reply must and may carry (``server/reply_keys.py``); None = not checked.
    prior_metrics
        The same for the fused evaluation of training replies.
    limits
        The bounds of ``federated.screening``.
    pinned
        Site -> ``num-examples`` of its first accepted reply of this kind (:func:`pinned_counts`).
    prior_pinned
        The same for the fused evaluation (the sites' validation splits).
    """

    metrics: MetricKeys | None = None
    prior_metrics: MetricKeys | None = None
    limits: ScreeningConfig = field(default_factory=ScreeningConfig)
    pinned: Mapping[str, int] = field(default_factory=dict)
    prior_pinned: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Screened:
    """The replies of one exchange, screened.

    Attributes
    ----------
    accepted
        Usable replies, sorted by site (aggregation sums in this order: rounds are bit-reproducible).
    failures
        One ``{"site", "node_id", "reason"}`` row per missing, failed or malformed reply, and per clipped
        update (with ``"action": "clipped"``; the update is accepted, scaled).
    prior_failures
        With ``prior_eval``: accepted training replies whose evaluation of the received model is unusable, one
        row each (the update itself is accepted; its record's ``prior_eval`` is None).
    """

    accepted: list[ScreenedReply] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    prior_failures: list[dict[str, Any]] = field(default_factory=list)


def _failure(site: str, node: int, reason: str) -> dict[str, Any]:
    if len(reason) > _MAX_REASON:  # a traceback names the exception at its end
        reason = f"{reason[: _MAX_REASON // 2]} ... {reason[-_MAX_REASON // 2 :]}"
    return {"site": site, "node_id": node, "reason": reason}


def pinned_counts(history: Iterable[Mapping[str, Any]], phase: str) -> dict[str, int]:
    """Site -> ``num-examples`` of its first accepted reply of ``phase`` in a run's history (``train``, ``val``...).

    The history holds every accepted reply's metrics and survives a resume, so the pin does too.
    """
    out: dict[str, int] = {}
    for row in history:
        if row.get("phase") == phase and keys.NUM_EXAMPLES in row:
            out.setdefault(str(row["site"]), int(row[keys.NUM_EXAMPLES]))
    return out


def _claimed_name(reply: Message) -> str | None:
    """The ``site-name`` a reply claims, or None; raises ValueError for a name that is not a short text."""
    if keys.SITE not in reply.content:
        return None
    name = reply.content[keys.SITE].get(keys.SITE_NAME, "")
    if not isinstance(name, str) or len(name) > _MAX_NAME or not name.isprintable():
        raise ValueError(f"the claimed site name {str(name)[:40]!r}... is not a printable text of <= {_MAX_NAME} chars")
    return name or None


class _Identities:
    """Which node may use which site name in one exchange (``node_sites`` is the server's record, updated here)."""

    def __init__(self, sent: list[Message], replies: list[Message], node_sites: dict[int, str]) -> None:
        self.node_sites = node_sites
        self.asked = {int(m.metadata.dst_node_id): m.metadata.message_id for m in sent}
        self.answered: set[int] = set()
        new_claims: dict[str, set[int]] = {}
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            try:
                name = _claimed_name(reply) if reply.has_content() else None
            except ValueError:
                continue
            if name is not None and node not in node_sites:
                new_claims.setdefault(name, set()).add(node)
        self.contested = {name for name, nodes in new_claims.items() if len(nodes) > 1}

    def known(self, node: int) -> str:
        return self.node_sites.get(node, f"node-{node}")

    def check(self, reply: Message) -> tuple[str, str | None]:
        """The reply's site, and the reason its identity is refused (None when it is accepted)."""
        node = int(reply.metadata.src_node_id)
        site = self.known(node)
        if node not in self.asked:
            return site, f"reply from node {node}, which this exchange did not ask"
        if node in self.answered:
            return site, f"a second reply from node {node} in one exchange"
        self.answered.add(node)
        if reply.metadata.reply_to_message_id != self.asked[node]:
            return site, "the reply answers another message than the one sent to its node"
        try:
            name = _claimed_name(reply) if reply.has_content() else None
        except ValueError as err:
            return site, str(err)
        if name is None:
            return site, None
        if node in self.node_sites:
            if name != self.node_sites[node]:
                return site, f"claims to be site {name!r}, but node {node} is site {self.node_sites[node]!r}"
            return site, None
        if name in self.contested:
            return f"node-{node}", f"several new nodes claim the site name {name!r} in one exchange"
        holders = [n for n, s in self.node_sites.items() if s == name]
        live = [n for n in holders if n in self.asked]
        if live:
            return f"node-{node}", f"claims to be site {name!r}, the name of node {live[0]}"
        for holder in holders:  # a site that restarted under a new node id: its old node is not in this exchange
            log.warning("site %s moves from node %d to node %d", name, holder, node)
            del self.node_sites[holder]
        self.node_sites[node] = name
        return name, None


def _structure(reply: Message, train: bool) -> str | None:
    """Say what is wrong with the records a (non-error) reply carries, or return None."""
    content = reply.content
    metrics, arrays, configs = content.metric_records, content.array_records, content.config_records
    if keys.METRICS not in metrics:
        return "reply has no metric record"
    if len(metrics) != 1:
        return f"reply carries {len(metrics)} MetricRecords, expected exactly one ({keys.METRICS!r})"
    if train and keys.ARRAYS not in arrays:
        return "training reply has no model arrays"
    if len(arrays) != (1 if train else 0):
        return f"{'training' if train else 'evaluation'} reply carries {len(arrays)} ArrayRecords"
    allowed = {keys.SITE, LAYOUT, keys.PRIOR_EVAL} if train else {keys.SITE}
    extra = sorted(set(configs) - allowed)
    if extra:
        return f"reply carries unexpected records {[str(k)[:40] for k in extra[:3]]}"
    return None


def _screen(
    reply: Message, site: str, reference: Mapping[str, np.ndarray] | None, expect: Expectations
) -> ScreenedReply | str:
    """The decoded reply, or the reason it is unusable."""
    if reply.has_error():
        return f"client failed: {reply.error.reason}"
    if not reply.has_content():
        return "reply carries neither content nor an error"
    train = reference is not None
    problem = _structure(reply, train)
    if problem is not None:
        return problem
    try:
        decoded = decode_reply(reply, site, with_arrays=train)
    except PackingError as err:
        return f"malformed {'packed ' if is_packed(reply.content) else ''}arrays: {err}"
    problem = check_metrics(decoded.metrics, expect.metrics, expect.limits, expect.pinned.get(site))
    if problem is None and reference is not None:
        problem = check_update(decoded.arrays, reference, expect.limits)
    return decoded if problem is None else problem


def _screen_one(
    reply: Message,
    identities: _Identities,
    reference: Mapping[str, np.ndarray] | None,
    expect: Expectations,
) -> tuple[str, int, ScreenedReply | str]:
    """(site, node, record or reason) of one reply; never raises."""
    node, site = -1, "unknown"
    try:
        node = int(reply.metadata.src_node_id)
        site = identities.known(node)
        site, problem = identities.check(reply)
        return site, node, _screen(reply, site, reference, expect) if problem is None else problem
    except Exception as err:  # last resort: whatever a peer sent, it becomes a rejection, not a crashed round
        return site, node, f"reply could not be screened ({err!r})"


def _check_prior(record: ScreenedReply, expect: Expectations) -> str | None:
    if not record.prior_eval:
        return NO_PRIOR_EVAL
    try:
        pinned = expect.prior_pinned.get(record.site)
        return check_metrics(record.prior_eval, expect.prior_metrics, expect.limits, pinned)
    except Exception as err:  # last resort, as for the reply itself
        return f"fused evaluation could not be screened ({err!r})"


def _bound_influence(out: Screened, reference: Mapping[str, np.ndarray], limits: ScreeningConfig) -> None:
    """Reject or clip accepted updates far further from the global model than the other sites' updates."""
    if limits.outlier_factor is None or len(out.accepted) < 2:
        return
    distances = {i: update_distance(r.arrays, reference) for i, r in enumerate(out.accepted)}
    bounds = outlier_bounds(distances, limits.outlier_factor)
    kept = []
    for i, record in enumerate(out.accepted):
        if i not in bounds:
            kept.append(record)
            continue
        what = (
            f"update is {distances[i]:.3g} from the global model, more than federated.screening.outlier_factor="
            f"{limits.outlier_factor:g} times the other sites' median ({bounds[i]:.3g})"
        )
        if limits.on_outlier == "clip":
            scale = bounds[i] / distances[i]
            kept.append(replace(record, arrays=clip_update(record.arrays, reference, scale)))
            out.failures.append({**_failure(record.site, record.node_id, f"clipped: {what}"), "action": "clipped"})
        else:
            out.failures.append(_failure(record.site, record.node_id, what))
    out.accepted = kept


def _superlink_errors(sent: list[Message], replies: list[Message]) -> tuple[list[Message], dict[int, str]]:
    """Split off the SuperLink's own error replies to this exchange's messages: node -> reason; the other replies.

    A reply from :data:`SUPERLINK_NODE` that carries an error and answers one of ``sent`` stands for that
    message's destination (the site went offline while its message waited); anything else from that id is
    screened like every reply, and refused as coming from a node this exchange did not ask.
    """
    destination = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent}
    kept: list[Message] = []
    unavailable: dict[int, str] = {}
    for reply in replies:
        node = destination.get(reply.metadata.reply_to_message_id)
        if int(reply.metadata.src_node_id) == SUPERLINK_NODE and reply.has_error() and node is not None:
            unavailable.setdefault(node, f"the SuperLink reports the site unreachable: {reply.error.reason}")
        else:
            kept.append(reply)
    return kept, unavailable


def screen_replies(
    sent: list[Message],
    replies: Iterable[Message],
    node_sites: dict[int, str],
    reference: Mapping[str, np.ndarray] | None,
    prior_eval: bool = False,
    expect: Expectations | None = None,
) -> Screened:
    """Decode and check every reply; describe every missing, failed, malformed or out-of-bounds one.

    Parameters
    ----------
    sent
        The messages sent this exchange (their destinations that did not reply are reported as dropped).
    replies
        What came back within the round timeout.
    node_sites
        Node id -> site name, updated from the replies' ``site-name`` (a node keeps its first name).
    reference
        The global arrays sent for training, to check updates against (names, shapes, dtypes, finite values);
        None for evaluation replies, which carry metrics only.
    prior_eval
        The training messages asked the sites to evaluate the received model first (fused evaluation): check
        that evaluation too (``Screened.prior_failures``). Default False.
    expect
        Expected metric keys, bounds and pinned counts; default: any metric keys, default bounds, no pins.

    Returns
    -------
    Screened
        Accepted records and failure rows.
    """
    expect = expect or Expectations()
    out = Screened()
    replies = list(replies)
    replies, unavailable = _superlink_errors(sent, replies)
    identities = _Identities(sent, replies, node_sites)
    replied = {int(r.metadata.src_node_id) for r in replies}
    for msg in sent:
        node = int(msg.metadata.dst_node_id)
        if node in unavailable:
            out.failures.append(_failure(identities.known(node), node, unavailable[node]))
        elif node not in replied:
            out.failures.append(_failure(identities.known(node), node, NO_REPLY))
    for reply in replies:
        site, node, screened = _screen_one(reply, identities, reference, expect)
        if isinstance(screened, str):
            out.failures.append(_failure(site, node, screened))
        else:
            out.accepted.append(screened)
    out.accepted.sort(key=lambda r: r.site)
    if reference is not None:
        _bound_influence(out, reference, expect.limits)
    if prior_eval:
        for i, record in enumerate(out.accepted):
            problem = _check_prior(record, expect)
            if problem is not None:
                out.prior_failures.append(_failure(record.site, record.node_id, problem))
                out.accepted[i] = replace(record, prior_eval=None)
    return out
