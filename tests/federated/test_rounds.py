import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Array

from client.app import app as client_app
from fltesting.faults import faulty_client_app
from fltesting.inprocess import InProcessGrid as LocalGrid
from server.app import run_experiment
from server.state import ServerState
from strategies import keys
from strategies.packing import is_packed, pack_content, unpack_content
from tests.federated.conftest import settings_for, site_nodes

TIMING = ("time/", "seconds", "train-seconds", "eval-seconds", "wall time")


def _without_timing(rows):
    # NaN marks an undefined metric; NaN != NaN, so compare it as None.
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: clean(v) for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def test_federated_run_writes_results_report_and_checkpoints(tmp_path, experiment_file):
    # Prepare
    grid = LocalGrid(client_app, site_nodes(3))
    # Execute
    run_experiment(grid, settings_for(experiment_file(), tmp_path / "out"))
    # Assert
    run_dir = tmp_path / "out" / "run"
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["sites_trained"] == 3 for r in rounds)
    assert all(0 <= r["time/aggregate_s"] <= r["time/round_s"] for r in rounds)  # the strategy step, timed alone
    assert "val/segmentation/dice" in rounds[-1]
    sites = [json.loads(line) for line in (run_dir / "sites.jsonl").read_text().splitlines()]
    assert {s["site"] for s in sites if s["phase"] == "train"} == {"site-a", "site-b", "site-c"}
    assert {s["phase"] for s in sites} == {"train", "val", "test"}
    assert (run_dir / "checkpoints" / "round_001.pt").is_file()
    assert (run_dir / "checkpoints" / "round_002.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    report = (run_dir / "report.md").read_text()
    assert "Validation per round" in report and "plots/segmentation_val.png" in report
    assert (run_dir / "plots" / "classification_val.png").is_file()


def test_killed_server_resumes_with_the_same_history(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 3})
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "full"))
    # Execute: the server dies after round 1, then a new server process resumes the run
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed"), stop_after=1)
    partial = ServerState.load(tmp_path / "killed" / "run" / "server_state.pt")
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed", resume=True))
    # Assert
    assert partial.round == 1
    full = ServerState.load(tmp_path / "full" / "run" / "server_state.pt")
    resumed = ServerState.load(tmp_path / "killed" / "run" / "server_state.pt")
    assert [r["round"] for r in resumed.history if r["phase"] == "round"] == [1, 2, 3]
    assert _without_timing(resumed.history) == _without_timing(full.history)
    for name, tensor in full.global_state.items():
        assert torch.equal(tensor, resumed.global_state[name]), name


def test_a_resumed_fedadam_run_continues_with_the_saved_server_moments(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 2, "strategy": "fedadam"})
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "full"))
    # Execute
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed"), stop_after=1)
    partial = ServerState.load(tmp_path / "killed" / "run" / "server_state.pt")
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path / "killed", resume=True))
    # Assert
    assert set(partial.strategy) == {"m_t", "v_t"}
    full = ServerState.load(tmp_path / "full" / "run" / "server_state.pt")
    resumed = ServerState.load(tmp_path / "killed" / "run" / "server_state.pt")
    for name, tensor in full.global_state.items():
        assert torch.equal(tensor, resumed.global_state[name]), name


def test_resume_refuses_a_different_config(tmp_path, experiment_file):
    from server.state import ResumeError

    experiment = experiment_file()
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path), stop_after=1)
    changed = experiment_file(train={"lr": 0.01})
    with pytest.raises(ResumeError, match="another experiment config"):
        run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(changed, tmp_path, resume=True))


def _tampering(edit):
    """A tamper hook: site-b's training reply gets ``edit(arrays)`` applied to its named arrays, then is
    re-packed, as a faulty client would send it (well-formed on the wire, wrong in content)."""

    def tamper(node, reply):
        if node != 2 or reply.has_error() or keys.ARRAYS not in reply.content:
            return reply
        assert is_packed(reply.content)  # the server packs by default, so the client replied packed
        unpack_content(reply.content)
        edit(reply.content[keys.ARRAYS])
        pack_content(reply.content)
        return reply

    return tamper


def _nan_weights(arrays):
    name = next(iter(arrays.keys()))
    bad = arrays[name].numpy().copy()
    bad.flat[0] = np.nan
    arrays[name] = Array(bad)


def _missing_key(arrays):
    del arrays[next(iter(arrays.keys()))]


def _wrong_shape(arrays):
    name = next(k for k in arrays.keys() if arrays[k].numpy().ndim >= 2 and arrays[k].numpy().shape[0] > 1)
    arrays[name] = Array(arrays[name].numpy()[:1].copy())


def _wrong_dtype(arrays):
    name = next(iter(arrays.keys()))
    arrays[name] = Array(arrays[name].numpy().astype(np.float64))


def _truncated_packing(node, reply):
    if node == 2 and not reply.has_error() and keys.ARRAYS in reply.content:
        packed = reply.content[keys.ARRAYS]
        dtype = next(iter(packed.keys()))
        packed[dtype] = Array(packed[dtype].numpy()[:-1].copy())
    return reply


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_tampering(_nan_weights), "NaN/Inf"),
        (_tampering(_missing_key), "missing 1 keys"),
        (_tampering(_wrong_shape), "has shape"),
        (_tampering(_wrong_dtype), "has dtype float64"),
        (_truncated_packing, "malformed packed arrays"),
    ],
)
def test_malformed_update_is_rejected_and_the_round_completes(tmp_path, experiment_file, tamper, reason):
    # Prepare
    grid = LocalGrid(client_app, site_nodes(3), tamper=tamper)
    # Execute
    run_experiment(grid, settings_for(experiment_file(federated={"rounds": 1}), tmp_path))
    # Assert
    state = ServerState.load(tmp_path / "run" / "server_state.pt")
    failures = [r for r in state.history if r["phase"] == "failure" and r["failed_phase"] == "train"]
    assert len(failures) == 1 and reason in failures[0]["reason"]
    assert failures[0]["site"] == "site-b"
    assert [r["sites_trained"] for r in state.history if r["phase"] == "round"] == [2]
    assert all(torch.isfinite(v).all() for v in state.global_state.values() if v.is_floating_point())
    assert (tmp_path / "run" / "failures.jsonl").read_text().count(reason) == 1


def test_client_exception_and_dropout_are_recorded_and_the_round_completes(tmp_path, experiment_file):
    # Prepare: partition 0 raises in round 1, node 3 never answers
    grid = LocalGrid(faulty_client_app(partition=0, server_round=1), site_nodes(3), dropped=[3])
    # Execute: with 3 sites and min_train_nodes=1 the round still aggregates one update
    experiment = experiment_file(
        federated={"rounds": 1, "min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 2,
                   "round_timeout_s": 0.5}  # the server waits this long for node 3
    )
    run_experiment(grid, settings_for(experiment, tmp_path))
    # Assert
    state = ServerState.load(tmp_path / "run" / "server_state.pt")
    reasons = {
        r["node_id"]: r["reason"] for r in state.history if r["phase"] == "failure" and r["failed_phase"] == "train"
    }
    assert "InjectedFault" in reasons[1]
    assert "no reply within the round timeout" in reasons[3]
    assert [r["sites_trained"] for r in state.history if r["phase"] == "round"] == [1]


def test_too_few_usable_updates_keep_the_global_model(tmp_path, experiment_file):
    # Prepare: two of three sites fail, min_train_nodes=2
    grid = LocalGrid(client_app, site_nodes(3), dropped=[2, 3])
    experiment = experiment_file(federated={"rounds": 1, "min_evaluate_nodes": 1, "round_timeout_s": 0.5})
    # Execute
    run_experiment(grid, settings_for(experiment, tmp_path))
    # Assert
    state = ServerState.load(tmp_path / "run" / "server_state.pt")
    first = torch.load(tmp_path / "run" / "checkpoints" / "round_001.pt", weights_only=True)["model"]
    from mtmedformer.config import config_from_dict
    from server.app import initial_state

    initial = initial_state(config_from_dict(state.config)).global_state
    assert all(torch.equal(first[k], initial[k]) for k in initial)
    assert len([r for r in state.history if r["phase"] == "failure" and r["failed_phase"] == "train"]) == 2


def test_server_side_evaluation_on_the_pooled_test_split(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 1, "server_evaluation": True})
    # Execute
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    # Assert
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["server/num_examples"] > 0
    assert "server/segmentation/dice" in rounds[0]
    # the pooled test split is scored at the threshold the sites chose on validation, as their own tests are
    assert rounds[0]["server/classification/threshold"] == pytest.approx(rounds[0]["val/classification/threshold"])
    assert "server/classification/sensitivity_at_threshold" in rounds[0]


def test_matching_strategy_runs_in_the_round_loop_and_records_diagnostics(tmp_path, experiment_file):
    # Prepare
    experiment = experiment_file(federated={"rounds": 1, "strategy": "bnp_matching"})
    # Execute
    run_experiment(LocalGrid(client_app, site_nodes(3)), settings_for(experiment, tmp_path))
    # Assert
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert rounds[0]["sites_trained"] == 3
    assert "train/matching/seconds" in rounds[0]
    assert any(k.startswith("train/matching/moved/") for k in rounds[0])
