"""Screening: each reply decoded once into its record and checked once; every rejection has a reason."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from server.screening import NO_PRIOR_EVAL, NO_REPLY, screen_replies
from strategies import keys
from strategies.packing import pack_content

REFERENCE = {"w": np.zeros((2, 3), dtype=np.float32), "n": np.array(0, dtype=np.int64)}


def _sent(node: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    msg = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    msg.metadata.__dict__["_message_id"] = f"m{node}"
    return msg


def _reply(sent: Message, site: str | None, value: float = 1.0, n: float = 10, prior=None, **drop) -> Message:
    arrays = {"w": np.full((2, 3), value, dtype=np.float32), "n": np.array(5, dtype=np.int64)}
    content = RecordDict({
        keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: n}),
    })
    if site:
        content[keys.SITE] = ConfigRecord({keys.SITE_NAME: site})
    if prior is not None:
        content[keys.PRIOR_EVAL] = ConfigRecord(prior)
    for key in drop:
        del content[key]
    pack_content(content)
    return Message(content=content, reply_to=sent)


def test_accepted_replies_are_decoded_records_sorted_by_site_and_sites_are_learned():
    # Prepare
    sent = [_sent(1), _sent(2)]
    replies = [_reply(sent[0], "site-b", 2.0, 30), _reply(sent[1], "site-a", 1.0, 10)]
    node_sites = {}
    # Execute
    screened = screen_replies(sent, replies, node_sites, REFERENCE)
    # Assert
    assert [r.site for r in screened.accepted] == ["site-a", "site-b"] and not screened.failures
    assert [r.node_id for r in screened.accepted] == [2, 1]
    assert node_sites == {1: "site-b", 2: "site-a"}
    np.testing.assert_array_equal(screened.accepted[1].arrays["w"], np.full((2, 3), 2.0, dtype=np.float32))
    assert screened.accepted[1].num_examples == 30


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: Message(Error(code=0, reason="boom"), reply_to=s), "client failed: boom"),
        (lambda s: _reply(s, "site-b", **{keys.METRICS: True}), "no metric record"),
        (lambda s: _reply(s, "site-b", **{keys.ARRAYS: True}), "no model arrays"),
        (lambda s: _reply(s, "site-b", n=0), "positive whole number of samples"),
        (lambda s: _reply(s, "site-b", value=np.nan), "NaN/Inf"),
    ],
)
def test_unusable_replies_are_rejected_with_their_reason_and_the_site_they_came_from(make, reason):
    # Prepare: node 2 is known as site-b from an earlier round
    sent = [_sent(1), _sent(2)]
    replies = [_reply(sent[0], "site-a"), make(sent[1])]
    # Execute
    screened = screen_replies(sent, replies, {2: "site-b"}, REFERENCE)
    # Assert
    assert [r.site for r in screened.accepted] == ["site-a"]
    (failure,) = screened.failures
    assert failure["node_id"] == 2 and reason in failure["reason"]
    assert failure["site"] == "site-b"


def test_a_node_that_did_not_reply_is_reported_dropped_under_its_known_name():
    sent = [_sent(1), _sent(2)]
    screened = screen_replies(sent, [_reply(sent[0], "site-a")], {2: "site-b"}, REFERENCE)
    assert screened.failures == [{"site": "site-b", "node_id": 2, "reason": NO_REPLY}]


def test_evaluation_replies_carry_metrics_only():
    sent = [_sent(1)]
    reply = _reply(sent[0], "site-a", **{keys.ARRAYS: True})
    screened = screen_replies(sent, [reply], {}, None)
    assert screened.accepted[0].arrays == {} and screened.accepted[0].metrics == {keys.NUM_EXAMPLES: 10}


def test_a_missing_or_bad_fused_evaluation_rejects_the_evaluation_but_keeps_the_update():
    # Prepare
    sent = [_sent(1), _sent(2), _sent(3)]
    replies = [
        _reply(sent[0], "site-a", prior={keys.NUM_EXAMPLES: 4, "x": 0.5}),
        _reply(sent[1], "site-b"),
        _reply(sent[2], "site-c", prior={keys.NUM_EXAMPLES: -1}),
    ]
    # Execute
    screened = screen_replies(sent, replies, {}, REFERENCE, prior_eval=True)
    # Assert
    assert [r.site for r in screened.accepted] == ["site-a", "site-b", "site-c"]
    assert [r.prior_eval for r in screened.accepted] == [{keys.NUM_EXAMPLES: 4, "x": 0.5}, None, None]
    assert [(f["site"], f["reason"][:20]) for f in screened.prior_failures] == [
        ("site-b", NO_PRIOR_EVAL[:20]), ("site-c", "'num-examples' must ")
    ]


def test_the_superlinks_error_reply_for_an_offline_site_is_that_sites_failure():
    # Prepare: the SuperLink answers the message of node 3 (site-c went offline) from its own node id
    sent = [_sent(2), _sent(3)]
    unavailable = Message(Error(code=0, reason="node unavailable"), reply_to=sent[1])
    unavailable.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    stranger = Message(Error(code=0, reason="not an answer"), reply_to=_sent(9))
    stranger.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    # Execute
    screened = screen_replies(sent, [_reply(sent[0], "site-b"), unavailable, stranger], {3: "site-c"}, REFERENCE)
    # Assert: one failure for site-c (not a second one for "node-1"); an error that answers nothing sent is refused
    assert [r.site for r in screened.accepted] == ["site-b"]
    reasons = {(f["site"], f["node_id"]): f["reason"] for f in screened.failures}
    assert reasons[("site-c", 3)] == "the SuperLink reports the site unreachable: node unavailable"
    assert "did not ask" in reasons[(f"node-{SUPERLINK_NODE_ID}", SUPERLINK_NODE_ID)]
    assert len(screened.failures) == 2
