"""A site that sends a bad reply every round changes nothing: the run ends as if the site were not there.

Every case of :mod:`fltesting.hostile` is a reply the project's ClientApp could be made to send (crafted bytes,
layouts, metrics, names, outsized updates); it goes through the real screening and aggregation of a tiny
in-process run, next to two honest sites.
"""

import pytest
import yaml

from fltesting.hostile import CASE_PAIRS, run_federated, same_model
from tests.federated.conftest import TINY_EXPERIMENT, settings_for


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, synthetic_cache):
    data = {**TINY_EXPERIMENT, "data": {**TINY_EXPERIMENT["data"]}}
    data["data"]["synthetic"] = {**data["data"]["synthetic"], "cache_dir": str(synthetic_cache)}
    path = tmp_path_factory.mktemp("experiment") / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def without_the_site(experiment, tmp_path_factory):
    return run_federated(settings_for(experiment, tmp_path_factory.mktemp("honest")))


@pytest.mark.parametrize(("train", "evaluate"), CASE_PAIRS,
                         ids=[f"{t.name}+{e.name}" for t, e in CASE_PAIRS])
def test_a_site_sending_a_bad_reply_every_round_leaves_the_run_as_without_it(
    experiment, without_the_site, tmp_path, train, evaluate
):
    # Execute
    outcome = run_federated(settings_for(experiment, tmp_path), hostile=(train.edit, evaluate.edit))
    # Assert: every reply of the hostile site (node 3) was rejected with the expected reason, nothing else was
    by_phase = {}
    for row in outcome.failures:
        assert row["node_id"] == 3, row
        by_phase.setdefault(row["failed_phase"], []).append(row["reason"])
    assert len(by_phase["train"]) == 2 and all(train.expected in r for r in by_phase["train"][train.from_round - 1:])
    assert len(by_phase["val"]) == 2 and len(by_phase["test"]) == 1
    assert all(evaluate.expected in r for r in by_phase["val"] + by_phase["test"]), by_phase
    assert same_model(outcome.global_state, without_the_site.global_state)
    assert outcome.aggregates == without_the_site.aggregates
