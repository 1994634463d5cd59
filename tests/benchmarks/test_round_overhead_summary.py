"""The overhead benchmark's summary: which rounds count as steady state, and the whole-run ratio."""

import pytest

from benchmarks.round_overhead import _overrides, summarise


def _rows(walls, criticals):
    return [
        {"round": i + 1, "time/round_s": w, "time/client_critical_s": c, "bytes/sent": 1e6, "bytes/received": 2e6}
        for i, (w, c) in enumerate(zip(walls, criticals, strict=True))
    ]


def test_unfused_steady_state_is_every_round_after_the_first():
    # Prepare: round 1 pays start-up
    rows = _rows([30.0, 12.0, 11.0, 13.0], [10.0, 10.0, 10.0, 10.0])
    # Execute
    res = summarise("x", rows)
    # Assert
    assert res["steady_state_ratio"] == pytest.approx(1.2)
    assert res["steady_state_overhead_s"] == pytest.approx(2.0)
    assert res["run_ratio"] == pytest.approx(66.0 / 40.0)
    assert res["bytes_per_round"] == pytest.approx(3e6)


def test_fused_steady_state_leaves_out_the_last_round_with_its_separate_evaluation():
    # Prepare
    rows = _rows([30.0, 11.0, 11.0, 25.0], [10.0, 10.0, 10.0, 14.0])
    # Execute
    res = summarise("x", rows, fused=True)
    # Assert: the last round is in the per-round ratios and the run ratio, not in the steady state
    assert res["steady_state_ratio"] == pytest.approx(1.1)
    assert len(res["ratio_per_round"]) == 4
    assert res["run_ratio"] == pytest.approx(77.0 / 44.0)


def test_overrides_switch_fused_evaluation_and_drop_synthetic_settings_in_deployment():
    workload = {"images_per_site": 50, "local_epochs": 2, "pack_arrays": False}
    sim = _overrides(3, workload, fused=True)
    dep = _overrides(3, workload, fused=False, deployment=True)
    assert "federated.fused_evaluation=true" in sim and "data.synthetic.images_per_site=50" in sim
    assert "federated.fused_evaluation=false" in dep and "data.synthetic" not in dep
    assert "federated.rounds=3" in dep and "federated.local_epochs=2" in dep
    assert "federated.pack_arrays=false" in sim and "federated.pack_arrays=false" in dep
