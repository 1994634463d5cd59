"""The warm fork server (client/warm.py): same results as a ClientApp process per message, errors kept apart."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import entry, warm
from client.entry import app as entry_app
from fltesting.inprocess import InProcessGrid
from mtmedformer.errors import ConfigError
from server.app import run_experiment
from server.state import ServerState
from strategies import keys
from tests.deploy.harness import demo_sites
from tests.federated.conftest import TINY_EXPERIMENT, settings_for


@pytest.fixture
def runtime_dir(monkeypatch):
    """A short private folder for the servers' sockets (a Unix socket path is limited to ~107 bytes).

    Removing it at the end makes the servers of the test exit (they check their socket file every 5 s).
    """
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    monkeypatch.setenv(warm.IDLE_ENV, "60")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory):
    return demo_sites(tmp_path_factory.mktemp("sites"), num_sites=2, images_per_site=6, image_size=32)


def _run(tmp_path, sites, name):
    experiment = {**TINY_EXPERIMENT, "federated": {**TINY_EXPERIMENT["federated"], "strategy": "bnp_matching"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(experiment))
    nodes = [{"data-manifest": str(manifest), "site-name": site} for site, manifest in sites.items()]
    run_experiment(InProcessGrid(entry_app, nodes), settings_for(path, tmp_path, run_name=name))
    rows = [json.loads(line) for line in (tmp_path / name / "rounds.jsonl").read_text().splitlines()]
    kept = [{k: v for k, v in row.items() if not k.startswith(("time/", "bytes/")) and "seconds" not in k}
            for row in rows]
    return kept, ServerState.load(tmp_path / name / "server_state.pt").global_state


def test_deployed_sites_use_the_warm_server_and_simulated_ones_do_not(monkeypatch):
    deployed = Context(run_id=1, node_id=1, node_config={"data-manifest": "/data/manifest.csv"}, state=RecordDict(),
                       run_config={})
    simulated = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 3},
                        state=RecordDict(), run_config={})
    assert warm.enabled(deployed) and not warm.enabled(simulated)
    monkeypatch.setenv(warm.DISABLE_ENV, "0")
    assert not warm.enabled(deployed)


def test_a_run_through_the_warm_server_equals_one_without_it(tmp_path, two_sites, runtime_dir, monkeypatch):
    # Prepare
    monkeypatch.setenv(warm.DISABLE_ENV, "0")
    cold_rows, cold_state = _run(tmp_path, two_sites, "cold")
    monkeypatch.delenv(warm.DISABLE_ENV)

    # Execute
    warm_rows, warm_state = _run(tmp_path, two_sites, "warm")

    # Assert: one server per node served the run, and it changed nothing
    assert len(list(runtime_dir.glob("*/*.sock"))) == 2
    assert warm_rows == cold_rows and len(warm_rows) == 2
    assert warm_state.keys() == cold_state.keys()
    assert all(torch.equal(warm_state[k], cold_state[k]) for k in cold_state)


def test_a_failing_task_reports_its_traceback_and_the_server_serves_the_next(runtime_dir):
    # Prepare: a training message without the experiment config (a server of another version)
    InProcessGrid(entry_app, [{}])  # sets the task identity that creating Messages needs
    context = Context(run_id=1, node_id=7, node_config={"data-manifest": "/nowhere.csv"}, state=RecordDict(),
                      run_config={})
    msg = Message(content=RecordDict({keys.CONFIG: ConfigRecord({})}), dst_node_id=7, message_type="train")

    # Execute / Assert
    with pytest.raises(RuntimeError, match="the server sent no experiment config") as first:
        warm.call("train", msg, context)
    assert "Traceback" in str(first.value)
    socket_file = warm.socket_path(warm.app_dir(), 7)
    inode = socket_file.stat().st_ino
    with pytest.raises(RuntimeError, match="the server sent no experiment config"):
        warm.call("train", msg, context)
    assert socket_file.stat().st_ino == inode  # the same server, not a restarted one


def test_without_a_usable_socket_folder_the_message_runs_in_the_clientapp_process(tmp_path, monkeypatch, caplog):
    # Prepare: XDG_RUNTIME_DIR names a file, so the socket folder cannot be made
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocker))
    InProcessGrid(entry_app, [{}])
    context = Context(run_id=1, node_id=8, node_config={"data-manifest": "/nowhere.csv"}, state=RecordDict(),
                      run_config={})
    msg = Message(content=RecordDict({keys.CONFIG: ConfigRecord({})}), dst_node_id=8, message_type="train")

    # Execute / Assert: the handler's own error, raised here (not a RuntimeError from a server), and a warning
    with pytest.raises(ConfigError, match="the server sent no experiment config"):
        entry._handle("train", msg, context)
    assert "running this message in the ClientApp process" in caplog.text
