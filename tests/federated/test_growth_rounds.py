"""The matching strategy with growth in the round loop: grown global, per-site slices, evaluation, checkpoints."""

import json

import pytest
import torch

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid as LocalGrid
from mtmedformer.engine.checkpoint import load_checkpoint
from mtmedformer.models import build_model, build_model_for_state
from server.app import run_experiment
from server.state import ServerState
from tests.federated.conftest import settings_for, site_nodes

# A huge gamma and noise floor make opening new units always pay: the global model grows to the cap in round 1.
GROWING = {"growth": True, "gamma": 1.0e6, "noise_floor": 1.0e6, "growth_cap": 1.5}


def _mlp_width(state):
    return state["encoder.blocks.0.mlp.linear1.weight"].shape[0]


def test_growing_run_trains_evaluates_checkpoints_and_resumes(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(
        federated={"rounds": 2, "strategy": "bnp_matching", "server_evaluation": True, "matching": GROWING}
    )
    # Execute: round 1, a server restart, round 2
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path), stop_after=1)
    after_one = ServerState.load(tmp_path / "run" / "server_state.pt")
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path, resume=True))
    # Assert: the global model grew to the cap, every site trained on its slice in both rounds
    state = ServerState.load(tmp_path / "run" / "server_state.pt")
    cfg = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt").config
    configured = _mlp_width(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)).state_dict())
    assert _mlp_width(after_one.global_state) == int(1.5 * configured)
    assert _mlp_width(state.global_state) == int(1.5 * configured)
    assert set(after_one.strategy["custom"]["index_maps"]) == {"site-a", "site-b", "site-c"}
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["sites_trained"] for r in rounds] == [3, 3]
    assert rounds[0]["train/matching/grown"] > 0
    assert "server/segmentation/dice" in rounds[-1]
    assert not [r for r in state.history if r["phase"] == "failure"]
    # and a grown checkpoint builds and runs
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    model = build_model_for_state(cfg.model, cfg.data.image_size, len(cfg.data.classes), ckpt.model_state).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, cfg.data.image_size, cfg.data.image_size))
    assert set(out) == set(cfg.model.tasks)


@pytest.mark.slow
def test_a_resumed_growing_run_equals_an_uninterrupted_one(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 2, "strategy": "bnp_matching", "matching": GROWING})
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "full"))
    # Execute
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed"), stop_after=1)
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed", resume=True))
    # Assert
    full = ServerState.load(tmp_path / "full" / "run" / "server_state.pt")
    resumed = ServerState.load(tmp_path / "killed" / "run" / "server_state.pt")
    assert set(full.global_state) == set(resumed.global_state)
    assert all(torch.equal(full.global_state[k], resumed.global_state[k]) for k in full.global_state)
