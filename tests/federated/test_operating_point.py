"""Federated operating point: sites choose thresholds on validation, the server averages and applies them."""

import math

import pytest

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from mtmedformer.config import config_from_dict
from mtmedformer.engine.checkpoint import load_checkpoint
from server.app import run_experiment
from server.operating_point import federated_operating_point, validation_threshold
from server.results import AGGREGATE
from server.state import ServerState
from strategies import keys
from strategies.metric_aggregation import aggregate_task_metrics
from tests.federated.conftest import settings_for, site_nodes


class RecordingGrid(InProcessGrid):
    """Keeps the config of every evaluate message sent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.evaluate_configs = []

    def push_messages(self, messages):
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == "evaluate":
                self.evaluate_configs.append(dict(msg.content[keys.CONFIG]))
        return super().push_messages(messages)


def test_the_server_mean_is_weighted_by_validation_counts_and_skips_sites_that_could_not_choose():
    # Prepare: site a chose 0.2 on 30 labelled samples, b 0.6 on 10, c had one class (NaN)
    sites = [
        {"classification/threshold": 0.2, "classification/num-examples": 30.0, keys.NUM_EXAMPLES: 30.0},
        {"classification/threshold": 0.6, "classification/num-examples": 10.0, keys.NUM_EXAMPLES: 10.0},
        {"classification/threshold": math.nan, "classification/num-examples": 50.0, keys.NUM_EXAMPLES: 50.0},
    ]
    cfg = config_from_dict({})
    # Execute
    point = federated_operating_point(aggregate_task_metrics(sites), cfg)
    # Assert: (0.2 * 30 + 0.6 * 10) / 40
    assert point == {"threshold": pytest.approx(0.3), "rule": "youden", "fallback": False}
    assert federated_operating_point({"classification/threshold": math.nan}, cfg) is None
    assert federated_operating_point({}, cfg) is None


def test_sites_report_thresholds_the_checkpoints_store_them_and_the_test_evaluation_gets_the_last_one(
    tmp_path, experiment_file
):
    # Prepare
    grid = RecordingGrid(client_app, site_nodes(3))
    # Execute
    run_experiment(grid, settings_for(experiment_file(), tmp_path / "out"))
    # Assert
    run_dir = tmp_path / "out" / "run"
    history = ServerState.load(run_dir / "server_state.pt").history
    val_sites = [r for r in history if r["phase"] == "val" and r["site"] != AGGREGATE]
    assert val_sites and all("classification/threshold_fallback" in r for r in val_sites)
    last = validation_threshold(history, 2)
    assert last is not None and 0.0 <= last <= 1.0
    assert load_checkpoint(run_dir / "checkpoints" / "round_002.pt").classification_threshold() == last
    for rnd in (1, 2):
        stored = load_checkpoint(run_dir / "checkpoints" / f"round_{rnd:03d}.pt").operating_point
        assert stored.get("threshold") == validation_threshold(history, rnd)
    test_configs = [c for c in grid.evaluate_configs if c[keys.EVALUATE_SPLIT] == "test"]
    val_configs = [c for c in grid.evaluate_configs if c[keys.EVALUATE_SPLIT] == "val"]
    assert test_configs and all(c[keys.CLASSIFICATION_THRESHOLD] == last for c in test_configs)
    assert val_configs and all(keys.CLASSIFICATION_THRESHOLD not in c for c in val_configs)
    test_sites = [r for r in history if r["phase"] == "test" and r["site"] != AGGREGATE]
    assert test_sites and all(r["classification/threshold"] == last for r in test_sites)
    assert all("classification/threshold_fallback" not in r for r in test_sites)
