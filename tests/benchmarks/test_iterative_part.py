"""The iterative comparison over seeds: run names, server-lr tuning on validation, and its report tables."""

import json

import pytest

from benchmarks.fl_comparison import iterative, iterative_report
from benchmarks.fl_comparison.common import json_safe


def _run(strategy, seed, scores, server_lr=None, val=0.5, alpha=0.5, epochs=1):
    pooled = {"segmentation/dice": scores[0], "classification/auc": scores[1], "detection/map50": scores[2]}
    pooled["mean_score"] = sum(scores) / 3
    return {
        "alpha": alpha, "local_epochs": epochs, "strategy": strategy, "seed": seed, "server_lr": server_lr,
        "rounds": [{"round": 1, "pooled_test": pooled, "val": {"mean_score": val}, "aggregate_seconds": 0.1}],
        "final": {"pooled_test": pooled, "site_test": {}},
    }  # fmt: skip


def _part(runs, tuning=None):
    settings = {"alphas": [0.5], "local_epochs": [1], "strategies": ["fedavg", "fedadam", "bnp_matching"],
                "rounds": 1}  # fmt: skip
    return {"settings": settings, "runs": {str(i): r for i, r in enumerate(runs)}, "tuning": tuning or {}}


def test_run_name_keeps_the_single_seed_names_and_names_the_tuned_rate():
    # Execute / Assert
    assert iterative.run_name(0.1, 5, "fedavg") == "a0.1-e5-fedavg"
    assert iterative.run_name(0.1, 5, "fedavg", seed=2, server_lr=0.1) == "a0.1-e5-fedavg-s2"
    assert iterative.run_name(100.0, 1, "fedyogi", seed=1, server_lr=0.001) == "a100-e1-fedyogi-lr0.001-s1"


def test_conditions_keep_only_the_chosen_server_learning_rate():
    # Prepare: FedAdam tried at two rates with seed 0; 0.1 chosen and run with seed 1
    runs = [
        _run("fedadam", 0, (0.1, 0.5, 0.1), server_lr=0.01),
        _run("fedadam", 0, (0.3, 0.6, 0.2), server_lr=0.1),
        _run("fedadam", 1, (0.4, 0.7, 0.3), server_lr=0.1),
        _run("fedavg", 1, (0.2, 0.5, 0.2)),
        _run("fedavg", 0, (0.2, 0.5, 0.2)),
    ]
    tuning = {"a0.5-e1-fedadam": {"seed": 0, "val_mean_score": {"0.01": 0.3, "0.1": 0.4}, "chosen_server_lr": 0.1}}
    # Execute
    grouped = iterative_report.conditions(_part(runs, tuning))
    # Assert
    assert [r["server_lr"] for r in grouped[("0.5", 1, "fedadam")]] == [0.1, 0.1]
    assert [r["seed"] for r in grouped[("0.5", 1, "fedavg")]] == [0, 1]  # sorted by seed


def test_differences_pair_runs_seed_by_seed():
    # Prepare: seed 2 only in the first condition (no partner)
    first = [_run("bnp_matching", s, (0.3 + s / 10, 0.5, 0.5)) for s in (0, 1, 2)]
    second = [_run("fedavg", s, (0.3, 0.5, 0.5)) for s in (1, 0)]
    # Execute
    diffs = iterative_report.differences(first, second, "segmentation/dice")
    # Assert
    assert diffs == pytest.approx([0.0, 0.1])


def test_claim_rows_read_the_paired_difference_per_task():
    # Prepare: matching higher in Dice in both seeds, lower in AUC in both, equal in mAP
    runs = [_run("fedavg", s, (0.5, 0.7, 0.6)) for s in (0, 1)]
    runs += [_run("bnp_matching", s, (0.6 + s / 100, 0.6, 0.6)) for s in (0, 1)]
    # Execute
    (row,) = iterative_report.claim_rows(_part(runs), "learn")
    # Assert
    assert row[0] == "iterative, α = 0.5, E = 1 (learn scale, 2 seeds)"
    assert row[1].endswith("matching higher in every seed") and "(2/2)" in row[1]
    assert row[2].endswith("FedAvg higher in every seed")
    assert row[3].endswith("identical")


def test_iterative_tables_show_mean_and_spread_tuning_and_costs():
    # Prepare
    runs = [_run("fedavg", s, (0.5 + s / 10, 0.7, 0.6)) for s in (0, 1)]
    tuning = {"a0.5-e1-fedadam": {"seed": 0, "val_mean_score": {"0.01": 0.3, "0.1": 0.4}, "chosen_server_lr": 0.1}}
    # Execute
    text = iterative_report.iterative_tables(_part(runs, tuning), None)
    # Assert
    assert "| FedAvg | 0.550 ± 0.071 |" in text  # Dice over the two seeds
    assert "| FedAdam | not run |" in text
    assert "| a0.5-e1-fedadam | 0 | 0.300 | 0.400 | 0.1 |" in text
    assert "| α = 0.5, E = 1 | FedAvg | 0.100 ± 0.000 |" in text


@pytest.mark.slow
def test_adaptive_server_rate_is_chosen_on_validation_and_used_for_every_seed(tmp_path):
    # Execute: FedAdam at two server rates, two seeds, quick scale
    results = iterative.main(
        ["--quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--strategies", "fedadam",
         "--server-lrs", "0.01", "0.1", "--seeds", "0", "1"]
    )  # fmt: skip
    # Assert
    (choice,) = results["tuning"].values()
    scores = choice["val_mean_score"]
    assert set(scores) == {"0.01", "0.1"}
    best = max(scores, key=lambda k: -1.0 if scores[k] is None else scores[k])
    assert choice["chosen_server_lr"] == float(best)
    seed_one = [r for r in results["runs"].values() if r["seed"] == 1]
    assert [r["server_lr"] for r in seed_one] == [float(best)]
    assert json.loads((tmp_path / "iterative.json").read_text())["tuning"] == json_safe(results["tuning"])
