"""Fused evaluation: sites score the received global before training it, one exchange per round."""

import json

import torch

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from server.app import run_experiment
from server.results import AGGREGATE
from server.state import ServerState
from tests.federated.conftest import settings_for, site_nodes
from tests.federated.test_rounds import _without_timing


class CountingGrid(InProcessGrid):
    """Counts message exchanges by type."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exchanges = []

    def push_messages(self, messages):
        messages = list(messages)
        self.exchanges.append(messages[0].metadata.message_type if messages else None)
        return super().push_messages(messages)


def _val_rows(history):
    rows = [r for r in history if r["phase"] == "val"]
    return sorted(_without_timing(rows), key=lambda r: (r["round"], r["site"]))


def test_fused_evaluation_gives_the_same_models_and_metrics_with_fewer_exchanges(tmp_path, experiment_file):
    # Prepare
    plain_grid, fused_grid = CountingGrid(client_app, site_nodes(3)), CountingGrid(client_app, site_nodes(3))
    plain = experiment_file(federated={"rounds": 3})
    run_experiment(plain_grid, settings_for(plain, tmp_path / "plain"))
    fused = experiment_file(federated={"rounds": 3, "fused_evaluation": True})
    # Execute
    run_experiment(fused_grid, settings_for(fused, tmp_path / "fused"))
    # Assert: identical global models, identical validation of every round's global, same best round
    a = ServerState.load(tmp_path / "plain" / "run" / "server_state.pt")
    b = ServerState.load(tmp_path / "fused" / "run" / "server_state.pt")
    for name, tensor in a.global_state.items():
        assert torch.equal(tensor, b.global_state[name]), name
    assert _val_rows(b.history) == _val_rows(a.history)
    assert {r["round"] for r in b.history if r["phase"] == "val"} == {1, 2, 3}
    assert b.best == a.best
    # one exchange per round, plus the last round's evaluation (and the final test evaluation of both runs)
    assert plain_grid.exchanges.count("evaluate") - fused_grid.exchanges.count("evaluate") == 2
    assert plain_grid.exchanges.count("train") == fused_grid.exchanges.count("train") == 3
    # every round checkpoint carries the metrics of its model, and the results files hold every round's val
    for rnd in (1, 2, 3):
        ckpt = torch.load(tmp_path / "fused" / "run" / "checkpoints" / f"round_{rnd:03d}.pt", weights_only=False)
        assert "segmentation/dice" in ckpt["metrics"]
    rounds = [json.loads(line) for line in (tmp_path / "fused" / "run" / "rounds.jsonl").read_text().splitlines()]
    assert all("val/segmentation/dice" in r for r in rounds)


def test_fused_round_costs_count_the_sites_evaluation_in_the_critical_path(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 2, "fused_evaluation": True})
    # Execute
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    # Assert: round 2's critical path is at least the slowest site's training plus its prior evaluation
    history = ServerState.load(tmp_path / "run" / "server_state.pt").history
    costs = {r["round"]: r for r in history if r["phase"] == "round"}
    # The per-site rows only: the aggregate rows hold count-weighted means, whose sum (train and validation are
    # weighted by different counts) can exceed every site's own sum.
    history = [r for r in history if r["site"] != AGGREGATE]
    train = {r["site"]: r["train-seconds"] for r in history if r["phase"] == "train" and r["round"] == 2}
    val = [r for r in history if r["phase"] == "val" and "eval-seconds" in r]
    prior = {r["site"]: r["eval-seconds"] for r in val if r["round"] == 1}
    assert set(prior) == set(train)
    final_eval = max(r["eval-seconds"] for r in val if r["round"] == 2)
    expected = max(train[s] + prior[s] for s in train) + final_eval
    assert abs(costs[2]["time/client_critical_s"] - expected) < 1e-9


def test_fused_run_killed_and_resumed_gives_the_same_history(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 3, "fused_evaluation": True})
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "full"))
    # Execute: killed after round 2, whose validation is still pending, then resumed
    killed = tmp_path / "killed"
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, killed), stop_after=2)
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, killed, resume=True))
    # Assert
    full = ServerState.load(tmp_path / "full" / "run" / "server_state.pt")
    resumed = ServerState.load(killed / "run" / "server_state.pt")
    assert _without_timing(resumed.history) == _without_timing(full.history)
    assert resumed.best == full.best
