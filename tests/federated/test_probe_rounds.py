"""Federated rounds with the descriptor probe: sites refit it locally, the server aggregates its buffers."""

import pytest
import torch

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from server.app import run_experiment
from server.state import ServerState
from tests.federated.conftest import settings_for, site_nodes


@pytest.mark.parametrize("strategy", ["fedavg", "bnp_matching"])
def test_sites_refit_the_probe_and_the_global_model_carries_the_aggregate(tmp_path, experiment_file, strategy):
    # Prepare
    experiment = experiment_file(model={"cls_descriptors": True}, federated={"rounds": 1, "strategy": strategy})
    # Execute
    run_experiment(InProcessGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    # Assert
    state = ServerState.load(tmp_path / "run" / "server_state.pt")
    weight = state.global_state["heads.classification.probe.weight"]
    assert weight.shape == (2, 6) and torch.isfinite(weight).all()
    assert float(weight.abs().sum()) > 0  # at least one site refitted it and the aggregate kept it
    assert not [r for r in state.history if r["phase"] == "failure"]
