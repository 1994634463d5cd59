"""A site's learned task weights survive a resumed run (a new Flower run) through its state-dir files."""

import pytest
import torch

from client.app import app as client_app
from client.site_state import KEEP_ROUNDS, SiteStateStore
from fltesting.inprocess import InProcessGrid
from mtmedformer.errors import ConfigError
from server.app import run_experiment
from server.settings import check_run_name
from server.state import ServerState
from tests.federated.conftest import settings_for, site_nodes
from tests.federated.test_rounds import _without_timing


def _nodes(state_root):
    return [{**node, "state-dir": str(state_root)} for node in site_nodes(3)]


def test_store_reads_the_newest_round_before_the_one_asked_for(tmp_path):
    # Prepare
    store = SiteStateStore(tmp_path, "run-1", "site-a")
    for rnd in (1, 2, 4):
        store.save(rnd, {"loss": {"log_vars": torch.full((3,), float(rnd))}})
    # Execute
    before_4, before_2, before_1 = store.load(4), store.load(2), store.load(1)
    # Assert
    assert before_4["loss"]["log_vars"].tolist() == [2.0, 2.0, 2.0]
    assert before_2["loss"]["log_vars"].tolist() == [1.0, 1.0, 1.0]
    assert before_1 is None


def test_store_keeps_only_the_newest_rounds(tmp_path):
    # Prepare
    store = SiteStateStore(tmp_path, "run-1", "site-a")
    # Execute
    for rnd in range(1, 7):
        store.save(rnd, {"loss": None})
    # Assert
    kept = sorted(p.name for p in (tmp_path / "run-1" / "site-a").iterdir())
    assert kept == [f"round_{r:04d}.pt" for r in range(7 - KEEP_ROUNDS, 7)]


def test_store_accepts_every_run_name_the_server_accepts(tmp_path):
    # Prepare: the server takes this run name (server/settings.py); the sites must store under it too
    store = SiteStateStore(tmp_path, check_run_name("ward 3 study"), "site a")
    # Execute
    store.save(1, {"loss": None})
    # Assert
    assert store.load(2) == {"loss": None}


def test_store_refuses_names_that_leave_its_folder(tmp_path):
    # Execute / Assert
    with pytest.raises(ConfigError, match="not a plain folder name"):
        SiteStateStore(tmp_path, "../elsewhere", "site-a")


def test_store_names_a_folder_it_cannot_write(tmp_path):
    # Prepare: state-dir names a file (as a wrong mount would), so no folder can be made in it
    (tmp_path / "state").write_text("")
    store = SiteStateStore(tmp_path / "state", "run-1", "site-a")
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"cannot write .*run-1.*state-dir"):
        store.save(1, {"loss": None})


def test_store_names_a_file_that_is_not_its_own(tmp_path):
    # Prepare
    store = SiteStateStore(tmp_path, "run-1", "site-a")
    store.save(1, {"loss": None})
    (tmp_path / "run-1" / "site-a" / "round_0001.pt").write_bytes(b"not a torch file")
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"cannot read .*round_0001\.pt.*delete it"):
        store.load(2)


@pytest.mark.parametrize("keep_optimizer_state", [False, True])
def test_resumed_run_with_learned_task_weights_gives_the_same_history(tmp_path, experiment_file, keep_optimizer_state):
    # Prepare: learned (uncertainty) task weights, which live at the sites and change every step; without the
    # state files a resumed run restarts them (and the optimizer state) and its round 3 differs.
    experiment = experiment_file(
        loss={"weighting": "uncertainty"}, federated={"rounds": 3, "keep_optimizer_state": keep_optimizer_state}
    )
    full = tmp_path / "full"
    run_experiment(InProcessGrid(client_app, _nodes(full / "state")), settings_for(experiment, full))
    killed = tmp_path / "killed"
    run_experiment(InProcessGrid(client_app, _nodes(killed / "state")), settings_for(experiment, killed), stop_after=2)
    # The server died while round 3 ran: a site had already trained it and written its state.
    site_dir = next((killed / "state" / "run").iterdir())
    kept = torch.load(site_dir / "round_0002.pt", weights_only=True)
    stale = {"loss": {k: v + 5.0 for k, v in kept["loss"].items()}, "optimizer": kept["optimizer"]}
    torch.save(stale, site_dir / "round_0003.pt")
    # Execute: resumed as a new run, with fresh node state (a new Grid: new Contexts)
    grid = InProcessGrid(client_app, _nodes(killed / "state"))
    run_experiment(grid, settings_for(experiment, killed, resume=True))
    # Assert: what the uninterrupted run recorded, and the sites kept their weights in files, not node state
    resumed = ServerState.load(killed / "run" / "server_state.pt")
    reference = ServerState.load(full / "run" / "server_state.pt")
    assert _without_timing(resumed.history) == _without_timing(reference.history)
    assert all(len(context.state) == 0 for context in grid.contexts.values())
    rewritten = torch.load(site_dir / "round_0003.pt", weights_only=True)["loss"]
    assert all(abs(float(rewritten[k] - stale["loss"][k])) > 1.0 for k in rewritten)
