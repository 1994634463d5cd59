"""mtmedformer-supernode: Flower's SuperNode with its two polling waits configurable, nothing else changed."""

import time

import pytest
from flwr.supernode import start_client_internal as loop

from client import supernode


@pytest.fixture
def restore_loop_time():
    original = loop.time
    yield
    loop.time = original


def test_poll_interval_defaults_and_reads_the_environment():
    # Execute / Assert
    assert supernode.poll_seconds({}) == supernode.DEFAULT_POLL_S
    assert supernode.poll_seconds({supernode.ENV: "1.5"}) == 1.5


@pytest.mark.parametrize("raw", ["nan", "fast", "0", "61", "-1"])
def test_poll_interval_out_of_range_names_the_variable(raw):
    # Execute / Assert
    with pytest.raises(SystemExit, match=f"{supernode.ENV}='{raw}'.*between 0.05 and 60"):
        supernode.poll_seconds({supernode.ENV: raw})


def test_clock_replaces_only_flowers_two_waits(monkeypatch):
    # Prepare
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = supernode.PollClock(idle_s=0.4, reply_s=0.1)
    # Execute
    for seconds in (3, 0.5, 2, 0.25):
        clock.sleep(seconds)
    # Assert: everything else of the time module is the real one
    assert slept == [0.4, 0.1, 2, 0.25]
    assert clock.monotonic is time.monotonic


def test_install_patches_the_pinned_supernode_loop(restore_loop_time):
    # Execute
    installed = supernode.install(0.5)
    # Assert
    assert installed
    assert isinstance(loop.time, supernode.PollClock)
    assert (loop.time.idle_s, loop.time.reply_s) == (0.5, 0.1)


def test_flowers_own_interval_leaves_the_loop_alone(restore_loop_time):
    # Execute
    installed = supernode.install(3)
    # Assert
    assert not installed
    assert loop.time is time


def test_another_flower_version_is_not_patched(restore_loop_time, monkeypatch, caplog):
    # Prepare
    import flwr

    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    # Execute
    installed = supernode.install(0.5)
    # Assert
    assert not installed
    assert loop.time is time
    assert "applies to Flower 1.42.0" in caplog.text
