"""Smoke tests of benchmarks/fl_comparison: the whole comparison at --quick scale, and its helpers on tiny inputs.

No metric value is asserted beyond being a number in [0, 1] or undefined: the quick models are barely trained.
"""

import argparse
import json
import math

import pytest
import torch

from benchmarks.fl_comparison import __main__ as run_all
from benchmarks.fl_comparison import bounds, iterative, one_shot_report
from benchmarks.fl_comparison.bounds import parse_partition
from benchmarks.fl_comparison.common import (
    HEADLINE_KEYS,
    CostModel,
    begin_part,
    moved_by_kind,
    settings_of,
    train_images_per_round,
    weighted_average,
)
from benchmarks.fl_comparison.report import fmt, table, update_doc
from mtmedformer.errors import ConfigError

GENERATED = ("conditions", "claim", "one_shot", "task_split", "iterative", "moved", "bounds", "identity_check")
DOC = "# Results\n\nkept text\n\n" + "".join(
    f"<!-- BEGIN generated:{name} -->\nold\n<!-- END generated:{name} -->\n\n" for name in GENERATED
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fl-comparison")
    doc = root / "RESULTS.md"
    doc.write_text(DOC)
    run_all.main(
        [
            "--quick",
            "--out",
            str(root / "out"),
            "--results",
            str(root / "results"),
            "--cache-dir",
            str(root / "cache"),
            "--doc",
            str(doc),
            "--skip-estimate",
        ]
    )
    return root


def _load(root, name):
    return json.loads((root / "out" / f"{name}.json").read_text())


def _is_score(value):
    return value is None or (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0)


def _check_headline(scores):
    assert set(scores) == set(HEADLINE_KEYS)
    assert all(_is_score(v) for v in scores.values()), scores


@pytest.mark.slow
def test_one_shot_scores_every_model_on_pooled_and_site_tests(quick_run):
    # Prepare / Execute: the module fixture ran the quick comparison
    results = _load(quick_run, "one_shot")
    # Assert
    assert results["settings"]["seeds"] == [0]
    assert set(results["variants"]) == {"independent", "shared"}
    merges = {"fedavg", "matching", "matching_sinkhorn"}
    for data in results["variants"].values():
        run = data["seeds"]["0"]
        assert set(run["models"]) == {"site-a", "site-b", "site-c"} | merges | {f"{m}+1" for m in merges}
        assert run["best_site"] in {"site-a", "site-b", "site-c"}
        assert set(run["merges"]) == merges and all(m["seconds"] >= 0 for m in run["merges"].values())
        assert 0.0 <= run["merges"]["matching_sinkhorn"]["soft-offdiagonal"] < 1.0
        for scores in run["models"].values():
            _check_headline(scores["pooled_test"])
            assert set(scores["site_test"]) == {"site-a", "site-b", "site-c"}
            for site_scores in scores["site_test"].values():
                _check_headline(site_scores)


@pytest.mark.slow
def test_one_shot_matching_keeps_identity_after_shared_init(quick_run):
    # Prepare
    shared = _load(quick_run, "one_shot")["variants"]["shared"]["seeds"]["0"]["merges"]["matching"]["moved"]
    # Execute / Assert: one short epoch from the same start, every group stays in place (design doc section 8)
    assert shared and all(v == 0.0 for v in shared.values()), shared


@pytest.mark.slow
def test_task_split_clients_keep_only_their_tasks_and_every_aggregator_runs(quick_run):
    # Prepare
    results = _load(quick_run, "task_split")
    # Execute
    counts = {name: client["task_counts"] for name, client in results["clients"].items()}
    # Assert: each single-task client holds annotations of its task only; every aggregator scored its round.
    assert counts["masks-only"]["classification"] == counts["masks-only"]["detection"] == 0
    assert counts["boxes-only"]["classification"] == counts["boxes-only"]["segmentation"] == 0
    assert counts["labels-only"]["segmentation"] == counts["labels-only"]["detection"] == 0
    assert all(v > 0 for v in counts["all-tasks"].values())
    assert {r["aggregator"] for r in results["runs"].values()} == {"fedavg_all", "fedavg_task", "matching"}
    for run in results["runs"].values():
        assert [r["round"] for r in run["rounds"]] == [1]
        assert run["rounds"][0]["seconds"] >= 0
        _check_headline(run["final"]["pooled_test"])


@pytest.mark.slow
def test_iterative_runs_every_strategy_with_round_curves(quick_run):
    # Prepare
    results = _load(quick_run, "iterative")
    # Execute
    runs = results["runs"]
    # Assert
    assert {r["strategy"] for r in runs.values()} == set(iterative.STRATEGIES)
    for run in runs.values():
        assert [r["round"] for r in run["rounds"]] == [1]
        _check_headline(run["rounds"][0]["pooled_test"])
        assert len(run["final"]["site_test"]) == 3
        assert run["seconds"] > 0
        assert run["seed"] == 0 and run["rounds"][0]["aggregate_seconds"] >= 0
    matching = next(r for r in runs.values() if r["strategy"] == "bnp_matching")
    assert "residual" in matching["rounds"][0]["moved"]


@pytest.mark.slow
def test_bounds_train_centralized_and_every_local_client(quick_run):
    # Prepare
    results = _load(quick_run, "bounds")
    # Execute
    local = results["local"]["site"]
    # Assert
    _check_headline(results["centralized"]["pooled_test"])
    assert set(results["centralized"]["site_test"]) == {"site-a", "site-b", "site-c"}
    assert set(local["clients"]) == {"site-a", "site-b", "site-c"}
    assert all(c["epochs_run"] == c["epochs_planned"] == 1 for c in local["clients"].values())
    _check_headline(local["mean_pooled_test"])


@pytest.mark.slow
def test_identity_check_reports_both_rounds(quick_run):
    # Prepare
    results = _load(quick_run, "identity_check")
    # Execute / Assert
    for key in ("round-1", "round-2"):
        assert results[key]["fedavg_step_norm"] > 0
        assert results[key]["matched_minus_fedavg_norm"] >= 0
        assert len(results[key]["moved_residual"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "iterative_segmentation.png",
        "iterative_classification.png",
        "iterative_detection.png",
        "iterative_mean.png",
        "one_shot.png",
        "matching_moved.png",
        "one_shot.json",
        "iterative.json",
        "bounds.json",
        "tables.md",
    ],
)
def test_report_writes_plots_tables_and_json(quick_run, name):
    # Prepare
    path = quick_run / "results" / name
    # Execute
    data = path.read_bytes()
    # Assert
    assert data
    if name.endswith(".png"):
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_fills_every_generated_block_of_the_doc(quick_run):
    # Prepare
    text = (quick_run / "RESULTS.md").read_text()
    # Execute / Assert
    assert "kept text" in text
    assert "\nold\n" not in text
    for name in GENERATED:
        block = text.split(f"<!-- BEGIN generated:{name} -->")[1].split(f"<!-- END generated:{name} -->")[0]
        assert "|---|" in block, name


@pytest.mark.slow
@pytest.mark.parametrize("part", sorted(run_all.PARTS))
def test_estimate_only_prints_a_positive_estimate_and_trains_nothing(quick_run, tmp_path, part, capsys):
    # Prepare
    argv = ["--quick", "--out", str(tmp_path), "--cache-dir", str(quick_run / "cache"), "--estimate-only"]
    # Execute
    result = run_all.PARTS[part].main(argv)
    # Assert
    assert result["estimate_s"] > 0
    assert "estimated wall time" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_bounds_with_no_partitions_plan_the_centralized_model_only(quick_run, capsys):
    # Prepare: --partitions given without values, at the learn scale's part name
    argv = ["--quick", "--out", str(quick_run / "estimate"), "--cache-dir", str(quick_run / "cache"), "--estimate-only",
            "--scale", "learn", "--partitions"]  # fmt: skip
    # Execute
    result = bounds.main(argv)
    # Assert
    printed = capsys.readouterr().out
    assert result["estimate_s"] > 0
    assert "[bounds_learn] estimated wall time" in printed and "local-only on 0 partitions" in printed


def test_bounds_plan_counts_local_epochs_per_partition():
    # Prepare: 1 s per training image, 0.5 s per evaluated image; 10 train and 4 val images
    cost = CostModel(1.0, 0.5)
    pooled = {"train": range(10), "val": range(4)}
    # Execute
    plans = [
        bounds.plan_seconds(cost, argparse.Namespace(central_epochs=2, epochs=3, partitions=parts), pooled)
        for parts in ([], ["site", "dirichlet:0.5"])
    ]
    # Assert: centralized 2 epochs alone, then 2 + 3 x 2 epochs
    assert plans == [2 * (10 + 2), 8 * (10 + 2)]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [([1.0, 1.0], [2.0, 3.0]), ([3.0, 1.0], [1.5, 2.5]), ([0.0, 2.0], [3.0, 4.0])],
)
def test_weighted_average_is_fedavg(weights, expected):
    # Prepare
    states = [
        {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)},
        {"w": torch.tensor([3.0, 4.0]), "n": torch.tensor(9)},
    ]
    # Execute
    merged = weighted_average(states, weights)
    # Assert
    assert torch.allclose(merged["w"], torch.tensor(expected))
    assert merged["w"].dtype == torch.float32
    assert merged["n"].item() == 7  # integer buffers come from the first state


@pytest.mark.parametrize(
    ("states", "weights"), [([], []), ([{"w": torch.ones(1)}], [0.0]), ([{"w": torch.ones(1)}], [1, 2])]
)
def test_weighted_average_rejects_bad_weights(states, weights):
    with pytest.raises(ValueError, match="weight"):
        weighted_average(states, weights)


@pytest.mark.parametrize(
    ("sizes", "epochs", "cap", "expected"),
    [
        ([33, 75, 102], 1, None, (2 + 4 + 6) * 16),  # full batches only
        ([33, 75, 102], 5, 8, 3 * 8 * 16),  # the cap binds at every client
        ([10], 3, None, 3 * 10),  # a split smaller than a batch is one short step per epoch
    ],
)
def test_train_images_per_round_mirrors_the_loader(sizes, epochs, cap, expected):
    assert train_images_per_round(sizes, 16, epochs, cap) == expected


def test_moved_by_kind_groups_the_diagnostics():
    # Prepare
    moved = {
        "encoder.residual": 0.5,
        "encoder.blocks.0.mlp": 1.0,
        "encoder.blocks.1.mlp": 0.0,
        "encoder.blocks.0.attn.heads": 0.25,
        "encoder.blocks.0.attn.qk": 0.2,
        "encoder.blocks.0.attn.vo": 0.4,
        "encoder.blocks.0.attn.qk[0]": 0.9,
        "heads.segmentation.decoder.ups.stride1.conv_block.out": 0.6,
    }
    # Execute
    kinds = moved_by_kind(moved)
    # Assert
    assert kinds == pytest.approx(
        {
            "residual": 0.5,
            "attention heads": 0.25,
            "within-head q/k, v/o": 0.3,
            "MLP hidden": 0.5,
            "decoder channels": 0.6,
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("site", {"scheme": "site"}), ("dirichlet:0.1", {"scheme": "dirichlet", "alpha": 0.1, "seed": 0})],
)
def test_parse_partition(text, expected):
    assert parse_partition(text) == expected


@pytest.mark.parametrize("text", ["iid", "dirichlet", "dirichlet:-1", "dirichlet:x"])
def test_parse_partition_rejects_bad_values(text):
    with pytest.raises(ConfigError, match="--partitions"):
        parse_partition(text)


def test_update_doc_replaces_only_named_blocks(tmp_path):
    # Prepare
    doc = tmp_path / "doc.md"
    doc.write_text(
        "a\n<!-- BEGIN generated:x -->\nold\n<!-- END generated:x -->\n"
        "<!-- BEGIN generated:y -->\nkeep\n<!-- END generated:y -->\n"
    )
    # Execute
    replaced = update_doc(doc, {"x": table(["h"], [[fmt(0.12345)], [fmt(None)]])})
    # Assert
    text = doc.read_text()
    assert replaced == ["x"]
    assert "| 0.123 |" in text and "| – |" in text and "old" not in text and "keep" in text


def test_begin_part_with_estimate_only_starts_nothing(tmp_path, capsys):
    # Prepare
    args = argparse.Namespace(estimate_only=True)
    # Execute
    run = begin_part("bounds", args, tmp_path, (90.0, "detail"), {"quick": True})
    # Assert
    assert run is None and list(tmp_path.iterdir()) == []
    assert "[bounds] estimated wall time: 1.5 min (detail)" in capsys.readouterr().out


def test_part_run_saves_settings_machine_extras_and_seconds(tmp_path):
    # Prepare
    args = argparse.Namespace(estimate_only=False, epochs=3)
    # Execute
    run = begin_part("bounds", args, tmp_path, (1.0, ""), settings_of(args, {"epochs_local": "epochs"}), pooled={})
    run.results["local"] = {"site": 1}
    finished = run.finish()
    # Assert: the keys in the order the report and the committed JSON files have them
    saved = json.loads((tmp_path / "bounds.json").read_text())
    assert list(saved) == ["settings", "machine", "pooled", "local", "seconds"]
    assert saved["settings"] == {"epochs_local": 3} and saved["seconds"] >= 0 and finished is run.results


def _one_shot_run(best, scores):
    # a one-shot record with only the pooled-test mean score of each model
    models = {name: {"pooled_test": {"mean_score": value}} for name, value in scores.items()}
    return {"best_site": best, "models": models}


def test_one_shot_report_pairs_models_seed_by_seed():
    # Prepare: two seeds; matching beats FedAvg in both, and the best site in one.
    runs = [
        _one_shot_run("site-a", {"site-a": 0.30, "site-b": 0.20, "fedavg": 0.10, "matching": 0.40}),
        _one_shot_run("site-b", {"site-a": 0.10, "site-b": 0.50, "fedavg": 0.20, "matching": 0.30}),
    ]
    # Execute
    versus_fedavg = one_shot_report.paired(runs, "matching", "fedavg", "mean_score")
    versus_best = one_shot_report.paired(runs, "matching", one_shot_report.BEST, "mean_score")
    # Assert: differences 0.30 and 0.10; against the best site (0.30, 0.50): 0.10 and -0.20.
    assert versus_fedavg == "+0.200 ± 0.141 (2/2)"
    assert versus_best == "-0.050 ± 0.212 (1/2)"
    assert one_shot_report.mean_sd([0.1, None, 0.3]) == "0.200 ± 0.141"
    assert one_shot_report.mean_sd([None]) == "–"
