"""Screening cases a single exchange shows: identity, integer buffers, pinned counts, outliers, records, last resort.

Each test drives :func:`server.screening.screen_replies` with replies as the wire carries them (packed, from
Flower ``Message`` objects); the federated cases (every strategy, the post-aggregation bound) run the real
round loop in process.
"""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fltesting.hostile import EVALUATION_CASES, TRAIN_CASES, run_federated, same_model
from mtmedformer.config import load_config
from mtmedformer.config.federated import ScreeningConfig
from server import screening
from server.app import initial_state
from server.screening import Expectations, pinned_counts, screen_replies
from server.settings import ServerSettings
from strategies import keys
from strategies.packing import pack_content
from strategies.validation import update_distance
from tests.federated.test_screening import REFERENCE, _sent


def _reply(sent: Message, site: str | None, value: float = 1.0, n: int = 10, counter: int = 5, **records) -> Message:
    arrays = {"w": np.full((2, 3), value, dtype=np.float32), "n": np.array(counter, dtype=np.int64)}
    content = RecordDict({
        keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: n}),
        **records,
    })
    if site:
        content[keys.SITE] = ConfigRecord({keys.SITE_NAME: site})
    pack_content(content)
    return Message(content=content, reply_to=sent)


def _from(reply: Message, node: int) -> Message:
    reply.metadata.__dict__["_src_node_id"] = node  # what a SuperLink would stamp for another node
    return reply


def _reasons(screened) -> dict[int, str]:
    return {f["node_id"]: f["reason"] for f in screened.failures}


@pytest.mark.parametrize(("counter", "reason"), [(-(10**18), "integer buffer 'n'"), (2**60, "max_integer_value")])
def test_integer_buffers_out_of_bounds_are_rejected(counter, reason):
    sent = [_sent(1), _sent(2)]
    screened = screen_replies(sent, [_reply(sent[0], "a"), _reply(sent[1], "b", counter=counter)], {}, REFERENCE)
    assert [r.site for r in screened.accepted] == ["a"] and reason in _reasons(screened)[2]


def test_replies_from_nodes_not_asked_twice_or_to_another_message_are_rejected():
    # Prepare: node 1 answers twice, node 9 was not asked, node 2's reply answers node 1's message
    sent = [_sent(1), _sent(2)]
    replies = [_reply(sent[0], "a"), _reply(sent[0], "a"), _from(_reply(sent[0], "x"), 9)]
    replies.append(_from(_reply(sent[0], "b"), 2))
    # Execute
    screened = screen_replies(sent, replies, {}, REFERENCE)
    # Assert
    reasons = [f["reason"] for f in screened.failures]
    assert [r.site for r in screened.accepted] == ["a"]
    assert any("second reply from node 1" in r for r in reasons)
    assert any("node 9, which this exchange did not ask" in r for r in reasons)
    assert any("answers another message" in r for r in reasons)


def test_a_node_keeps_its_name_and_may_not_take_a_live_nodes_name():
    # Prepare: node 1 is site-a, node 2 site-b; node 2 claims site-a, new node 3 claims site-b
    sent = [_sent(1), _sent(2), _sent(3)]
    node_sites = {1: "site-a", 2: "site-b"}
    replies = [_reply(sent[0], "site-a"), _reply(sent[1], "site-a"), _reply(sent[2], "site-b")]
    # Execute
    screened = screen_replies(sent, replies, node_sites, REFERENCE)
    # Assert
    assert [(r.site, r.node_id) for r in screened.accepted] == [("site-a", 1)]
    assert "node 2 is site 'site-b'" in _reasons(screened)[2]
    assert "the name of node 2" in _reasons(screened)[3]
    assert node_sites == {1: "site-a", 2: "site-b"}


def test_two_new_nodes_claiming_one_name_are_both_refused_and_a_restarted_site_keeps_its_name():
    sent = [_sent(1), _sent(2)]
    contested = screen_replies(sent, [_reply(sent[0], "site-a"), _reply(sent[1], "site-a")], {}, REFERENCE)
    assert not contested.accepted and all("several new nodes" in f["reason"] for f in contested.failures)
    # site-a's SuperNode restarted as node 7: its old node 1 is not in this exchange
    node_sites = {1: "site-a"}
    restarted = [_sent(7), _sent(2)]
    screened = screen_replies(restarted, [_reply(restarted[0], "site-a"), _reply(restarted[1], "site-b")],
                              node_sites, REFERENCE)
    assert [r.site for r in screened.accepted] == ["site-a", "site-b"] and node_sites == {7: "site-a", 2: "site-b"}


def test_a_count_above_the_sites_first_claim_or_the_declared_maximum_is_rejected():
    sent = [_sent(1), _sent(2), _sent(3)]
    expect = Expectations(limits=ScreeningConfig(max_examples_per_site=100), pinned={"a": 10, "b": 10})
    replies = [_reply(sent[0], "a", n=10), _reply(sent[1], "b", n=11), _reply(sent[2], "c", n=101)]
    screened = screen_replies(sent, replies, {}, REFERENCE, expect=expect)
    assert [r.site for r in screened.accepted] == ["a"]
    assert "the 10 samples of the site's first reply" in _reasons(screened)[2]
    assert "max_examples_per_site=100" in _reasons(screened)[3]


def test_the_pin_is_the_first_accepted_count_in_the_history():
    history = [{"phase": "failure", "site": "a"}, {"phase": "train", "site": "a", keys.NUM_EXAMPLES: 12},
               {"phase": "train", "site": "a", keys.NUM_EXAMPLES: 9},
               {"phase": "val", "site": "a", keys.NUM_EXAMPLES: 3}]
    assert pinned_counts(history, "train") == {"a": 12} and pinned_counts(history, "val") == {"a": 3}


def test_with_two_sites_the_one_far_outside_the_other_is_rejected_and_one_site_is_only_bounded():
    sent = [_sent(1), _sent(2)]
    screened = screen_replies(sent, [_reply(sent[0], "a", 0.01), _reply(sent[1], "b", 5.0)], {}, REFERENCE)
    assert [r.site for r in screened.accepted] == ["a"] and "outlier_factor=10" in _reasons(screened)[2]
    alone = screen_replies(sent[:1], [_reply(sent[0], "a", 5.0)], {}, REFERENCE)
    assert [r.site for r in alone.accepted] == ["a"]


def test_clip_mode_scales_the_outlier_down_to_the_bound_and_keeps_it():
    # Prepare: distances 1x, 1x and 100x the others'
    sent = [_sent(1), _sent(2), _sent(3)]
    replies = [_reply(sent[0], "a", 0.01), _reply(sent[1], "b", 0.01), _reply(sent[2], "c", 1.0)]
    expect = Expectations(limits=ScreeningConfig(on_outlier="clip", outlier_factor=10))
    # Execute
    screened = screen_replies(sent, replies, {}, REFERENCE, expect=expect)
    # Assert
    clipped = screened.accepted[2]
    assert [r.site for r in screened.accepted] == ["a", "b", "c"]
    assert screened.failures[0]["action"] == "clipped" and screened.failures[0]["site"] == "c"
    bound = 10 * update_distance(screened.accepted[0].arrays, REFERENCE)
    assert update_distance(clipped.arrays, REFERENCE) == pytest.approx(bound, rel=1e-5)
    assert clipped.arrays["n"] == 5  # integer buffers are not scaled


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"metrics-2": MetricRecord({"x": 1.0})}, "2 MetricRecords"),
        ({"arrays-2": ArrayRecord({"w": Array(np.zeros(1))})}, "2 ArrayRecords"),
        ({"other": ConfigRecord({"x": 1})}, "unexpected records"),
    ],
)
def test_replies_with_other_records_are_rejected(extra, reason):
    sent = [_sent(1)]
    screened = screen_replies(sent, [_reply(sent[0], "a", **extra)], {}, REFERENCE)
    assert not screened.accepted and reason in screened.failures[0]["reason"]


def test_evaluation_replies_with_arrays_lists_or_bad_names_are_rejected():
    sent = [_sent(1), _sent(2), _sent(3)]
    with_arrays = _reply(sent[0], "a")
    listed = Message(RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3, "x": [1.0, 2.0]})}),
                     reply_to=sent[1])
    bad_name = Message(RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3}),
                                   keys.SITE: ConfigRecord({keys.SITE_NAME: "a\nb"})}), reply_to=sent[2])
    screened = screen_replies(sent, [with_arrays, listed, bad_name], {}, None)
    reasons = _reasons(screened)
    assert not screened.accepted
    assert "evaluation reply carries 1 ArrayRecords" in reasons[1]
    assert "is a list, not a number" in reasons[2] and "not a printable text" in reasons[3]


def test_a_fused_evaluation_with_text_values_is_rejected_but_the_update_kept():
    sent = [_sent(1)]
    reply = _reply(sent[0], "a", **{keys.PRIOR_EVAL: ConfigRecord({keys.NUM_EXAMPLES: 3, "x": "high"})})
    screened = screen_replies(sent, [reply], {}, REFERENCE, prior_eval=True)
    assert screened.accepted[0].prior_eval is None and "is a str" in screened.prior_failures[0]["reason"]


def test_any_exception_while_screening_a_reply_becomes_its_rejection(monkeypatch):
    # Prepare: a checker that fails on one site's reply (as a bug on an unforeseen input would)
    original = screening.check_metrics

    def failing(metrics, *args):
        if metrics[keys.NUM_EXAMPLES] == 11:
            raise RuntimeError("unforeseen")
        return original(metrics, *args)

    monkeypatch.setattr(screening, "check_metrics", failing)
    sent = [_sent(1), _sent(2)]
    # Execute
    screened = screen_replies(sent, [_reply(sent[0], "a"), _reply(sent[1], "b", n=11)], {}, REFERENCE)
    # Assert
    assert [r.site for r in screened.accepted] == ["a"]
    assert "could not be screened (RuntimeError('unforeseen'))" in _reasons(screened)[2]


def _settings(experiment, out_dir, *overrides):
    return ServerSettings.from_run_config({"experiment": str(experiment), "output-dir": str(out_dir),
                                           "run-name": "run", "overrides": ";".join(overrides)})


STRATEGIES = ["fedavg", "fedprox", "fedadam", "fedyogi", "fedavgm", "fedmedian", "fedtrimmedavg", "bnp_matching"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_gets_only_screened_replies(tmp_path, experiment_file, strategy):
    # Prepare: the outsized update (it would pass any structural check) and an absurd evaluation
    experiment = experiment_file(federated={"rounds": 1})
    scaled = next(c for c in TRAIN_CASES if c.name == "scaled-update")
    dice = next(c for c in EVALUATION_CASES if c.name == "dice-1-huge-count")
    # Execute
    honest = run_federated(_settings(experiment, tmp_path / "honest", f"federated.strategy={strategy}"))
    hostile = run_federated(_settings(experiment, tmp_path / "hostile", f"federated.strategy={strategy}"),
                            hostile=(scaled.edit, dice.edit))
    # Assert
    assert {f["failed_phase"] for f in hostile.failures} == {"train", "val", "test"}
    assert same_model(hostile.global_state, honest.global_state)
    assert hostile.aggregates == honest.aggregates


def test_an_aggregate_with_absurd_values_is_not_taken_as_the_global_model(tmp_path, experiment_file):
    # Prepare: FedAdam with a server step of 1e8 moves every weight by about 1e8 (finite, absurd)
    experiment = experiment_file(federated={"rounds": 1, "strategy": "fedadam", "strategy_options": {"server_lr": 1e8}})
    # Execute
    outcome = run_federated(_settings(experiment, tmp_path / "run"))
    # Assert
    initial = initial_state(load_config(experiment)).global_state
    assert same_model(outcome.global_state, initial)
    assert all(torch.isfinite(v).all() for v in outcome.global_state.values())
