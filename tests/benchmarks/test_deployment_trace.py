"""benchmarks/deployment_trace.py on a SuperNode log excerpt in Flower 1.42's DEBUG format."""

import pytest

import benchmarks.deployment_trace as dt

ESC = "\x1b[92m"


def _exchange(kind, t0):
    """Log lines of one exchange starting at second ``t0`` (phases 2, 1.5, 4 and 3 s long)."""

    def line(level, seconds, text):
        minute, sec = divmod(t0 + seconds, 60)
        return f"{ESC}{level} \x1b[0m2026-11-25 22:{20 + int(minute):02d}:{sec:06.3f}".replace(".", ",") + f":  {text}"

    return [
        line("INFO", 0.0, f"Receiving: {kind} message (ID: abc)"),
        line("DEBUG", 0.5, "Runtime.AcquireTask"),
        line("INFO", 2.0, "Start `flwr-clientapp` process"),
        "22:21:03 INFO mtmedformer.models.build: built MTMedFormer (tiny)",  # our log format: ignored
        line("DEBUG", 3.5, "Loading ClientApp `client.app:app`"),
        line("DEBUG", 7.5, "Runtime.PushMessages"),
        line("INFO", 7.6, f"Sending: {kind} message (ID: def)"),
        line("INFO", 10.5, "Sent successfully"),
    ]


@pytest.fixture
def log_text():
    lines = []
    for i, kind in enumerate(["train", "evaluate", "train", "evaluate"]):
        lines += _exchange(kind, 12 * i)  # 1.5 s idle between exchanges
    return "\n".join(lines)


def test_exchanges_and_phases_are_read_from_the_timestamps(log_text):
    # Execute
    exchanges = dt.parse_supernode_log(log_text)
    # Assert
    assert [e.kind for e in exchanges] == ["train", "evaluate", "train", "evaluate"]
    first = exchanges[0]
    assert first.phase("received", "spawned") == pytest.approx(2.0)
    assert first.phase("spawned", "loaded") == pytest.approx(1.5)
    assert first.phase("loaded", "replied") == pytest.approx(4.0)
    assert first.phase("replied", "sent") == pytest.approx(3.0)
    assert dt.idle_gaps(exchanges) == pytest.approx([1.5, 1.5, 1.5])


def test_summary_skips_the_first_round_and_formats_a_table(log_text):
    # Execute
    summary = dt.summarise_trace({"site-a": log_text, "site-b": log_text})
    table = dt.format_trace(summary)
    # Assert
    assert set(summary) == {"train", "evaluate"}
    assert summary["train"]["app loaded → reply"] == pytest.approx(4.0)
    assert summary["train"]["idle until the next message"] == pytest.approx(1.5)
    assert "idle until the next message" not in summary["evaluate"] and "–" in table  # last exchange: no gap after
    assert table.splitlines()[0] == "| phase (median s) | evaluate | train |"


def test_a_log_without_debug_timestamps_gives_no_exchanges():
    assert dt.parse_supernode_log("INFO :      Receiving: train message\n") == []
