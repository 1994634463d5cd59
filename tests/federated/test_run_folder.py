"""The server's run folder: strict run config, confined run name, one server per folder, retired keys on resume."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client.app import app as client_app
from fltesting.inprocess import InProcessGrid as LocalGrid
from mtmedformer.config import to_dict
from mtmedformer.errors import ConfigError
from server.app import initial_state, open_run, run_experiment
from server.run_lock import LOCK_NAME, RunFolderLock, _start_ticks
from server.settings import ServerSettings
from server.state import ResumeError
from tests.federated.conftest import settings_for, site_nodes


@pytest.mark.parametrize(("value", "expected"), [(False, False), (True, True), ("false", False), ("True", True),
                                                 (" true ", True), ("FALSE", False)])
def test_resume_accepts_booleans_and_their_spelling(tmp_path, experiment_file, value, expected):
    assert settings_for(experiment_file(), tmp_path, resume=value).resume is expected


@pytest.mark.parametrize("value", ["yes", "no", "0", "1", "", 1, 0, None, "false!"])
def test_resume_rejects_anything_else(tmp_path, experiment_file, value):
    with pytest.raises(ConfigError, match=r"run config 'resume': expected true or false"):
        settings_for(experiment_file(), tmp_path, resume=value)


@pytest.mark.parametrize("name", ["../../x", "..", ".", "/tmp/elsewhere", "a/b", "a\\b", ".hidden", "~root", "x\ny"])
def test_run_name_must_be_one_folder_inside_the_output_root(tmp_path, experiment_file, name):
    with pytest.raises(ConfigError, match="run config 'run-name'"):
        settings_for(experiment_file(), tmp_path, run_name=name)
    assert not (tmp_path.parent / "x").exists()


def test_a_plain_run_name_gives_a_folder_directly_in_the_output_root(tmp_path, experiment_file):
    settings = settings_for(experiment_file(), tmp_path / "out", run_name="study-1_b")
    assert settings.run_dir(settings.load_experiment(), "default") == tmp_path / "out" / "study-1_b"


def test_a_run_name_that_is_a_link_out_of_the_root_is_refused(tmp_path, experiment_file):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    settings = settings_for(experiment_file(), tmp_path / "out", run_name="link")
    with pytest.raises(ConfigError, match="leads outside the output root"):
        settings.run_dir(settings.load_experiment(), "default")


def _exited_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(run_dir, pid, host=None, **extra):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, **extra}))


def test_a_second_server_on_a_running_servers_folder_stops_before_writing(tmp_path, experiment_file):
    # Prepare: a live process holds the folder, as a first server would
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run_dir = tmp_path / "run"
    try:
        _write_lock(run_dir, holder.pid)
        # Execute / Assert
        with pytest.raises(ResumeError, match=rf"in use by a running server \(pid {holder.pid}\)"):
            run_experiment(None, settings_for(experiment_file(), tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert not (run_dir / "config.yaml").exists()
    assert (run_dir / LOCK_NAME).exists()  # the holder's lock is not touched


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    _write_lock(tmp_path, 12345, host="some-other-host")
    with pytest.raises(ResumeError, match="server on host some-other-host"):
        RunFolderLock(tmp_path).acquire()


def test_a_stale_lock_of_a_dead_server_is_taken_over_with_a_warning(tmp_path, caplog):
    # Prepare
    dead = _exited_pid()
    _write_lock(tmp_path, dead)
    # Execute
    with caplog.at_level("WARNING"), RunFolderLock(tmp_path):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
    # Assert
    assert holder["pid"] == os.getpid()
    assert any(f"server pid {dead}, which no longer runs" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc (Linux)")
@pytest.mark.parametrize("recorded", ["another start time", "its own start time"])
def test_a_live_pid_holds_the_lock_only_if_it_is_the_process_that_wrote_it(tmp_path, recorded):
    # Prepare: a restarted container numbers its processes from 1 again, so a dead server's pid may be reused
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = _start_ticks(live.pid)
        assert ticks is not None
        _write_lock(tmp_path, live.pid, started=ticks + 1 if recorded == "another start time" else ticks)
        # Execute / Assert
        if recorded == "another start time":
            with RunFolderLock(tmp_path):
                assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        else:
            with pytest.raises(ResumeError, match=rf"in use by a running server \(pid {live.pid}\)"):
                RunFolderLock(tmp_path).acquire()
    finally:
        live.kill()
        live.wait()


def test_a_lock_holding_this_processs_own_pid_is_stale(tmp_path):
    # A restarted server container may give the new server the dead one's pid; the new one holds no lock yet.
    _write_lock(tmp_path, os.getpid())
    with RunFolderLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()


def test_the_lock_is_held_during_the_run_and_released_after(tmp_path, experiment_file):
    # Prepare
    seen = []

    class Watching(LocalGrid):
        def push_messages(self, *args, **kwargs):
            seen.append((tmp_path / "run" / LOCK_NAME).exists())
            return super().push_messages(*args, **kwargs)

    # Execute
    run_experiment(Watching(client_app, site_nodes(3)), settings_for(experiment_file(federated={"rounds": 1}),
                                                                     tmp_path))
    # Assert
    assert seen and all(seen)
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    assert (tmp_path / "run" / "server_state.pt").exists()


def test_resume_of_a_missing_folder_creates_nothing(tmp_path, experiment_file):
    with pytest.raises(ResumeError, match="nothing to resume"):
        run_experiment(None, settings_for(experiment_file(), tmp_path, resume=True))
    assert not (tmp_path / "run").exists()


def test_resume_drops_retired_keys_of_the_saved_config(tmp_path, experiment_file):
    # Prepare: a state saved by a version that still had model.stem (at its kept value "patch")
    settings = settings_for(experiment_file(), tmp_path, resume=True)
    cfg = settings.load_experiment()
    run_dir = settings.run_dir(cfg, "default")
    run_dir.mkdir(parents=True)
    state = initial_state(cfg)
    state.config = {**to_dict(cfg), "model": {**to_dict(cfg)["model"], "stem": "patch"}}
    state.save(run_dir / "server_state.pt")
    # Execute
    resumed = open_run(settings, cfg, run_dir)
    # Assert
    assert resumed.round == 0 and resumed.config["model"]["stem"] == "patch"


def test_settings_from_the_flower_default_run_config_are_valid():
    settings = ServerSettings.from_run_config({"run-name": "", "resume": False})
    assert settings.run_name == "" and settings.resume is False
