"""The docs generator: committed docs are what it generates, figures follow the results files, blocks are kept."""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from benchmarks import docs_tables
from benchmarks.markdown import block_names, replace_blocks
from benchmarks.results_tables import TABLES, _range, load, steady_rows
from benchmarks.round_overhead import summarise

ROOT = Path(__file__).resolve().parents[2]


def _copy_repo_docs(target: Path) -> Path:
    """README.md, docs/*.md, benchmarks/README.md and docs/results of the checkout, copied under ``target``."""
    for path in docs_tables.doc_paths(ROOT):
        (target / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / path.relative_to(ROOT))
    shutil.copytree(ROOT / "docs" / "results", target / "docs" / "results")
    return target


def test_committed_docs_are_what_the_generator_writes(tmp_path):
    # Prepare
    root = _copy_repo_docs(tmp_path)
    # Execute
    status = docs_tables.main(["--root", str(root)])
    # Assert: nothing to rewrite; if this fails, run `python -m benchmarks.docs_tables` and commit the docs
    assert status == 0
    stale = [
        str(path.relative_to(ROOT))
        for path in docs_tables.doc_paths(ROOT)
        if (root / path.relative_to(ROOT)).read_text(encoding="utf-8") != path.read_text(encoding="utf-8")
    ]
    assert stale == []


OWN_DOCS = ("README.md", "docs/RESULTS.md", "docs/measurements.md", "benchmarks/README.md")


def test_every_block_of_the_measurement_docs_has_a_table():
    # Prepare: the docs whose blocks this generator fills (other tools may keep blocks of their own elsewhere)
    tables = docs_tables.build_tables(ROOT / "docs" / "results")
    # Execute
    rendered = {str(path.relative_to(ROOT)): entry for path, entry in docs_tables.render(ROOT, tables).items()}
    # Assert: the README's headline block exists, and no block name of these docs is misspelt
    assert "headline" in block_names((ROOT / "README.md").read_text(encoding="utf-8"))
    assert set(OWN_DOCS) <= set(rendered)
    assert {name: rendered[name][2] for name in OWN_DOCS if rendered[name][2]} == {}


def test_a_changed_results_value_changes_only_its_generated_block(tmp_path):
    # Prepare: the shipped config's test AUC (0.820 as committed) re-measured as 0.5
    root = _copy_repo_docs(tmp_path)
    path = root / "docs" / "results" / "centralized_shipped_10min.json"
    record = json.loads(path.read_text())
    record["test"]["classification/auc"] = 0.5
    path.write_text(json.dumps(record))
    before = (root / "README.md").read_text(encoding="utf-8")
    # Execute
    status = docs_tables.main(["--root", str(root)])
    # Assert
    after = (root / "README.md").read_text(encoding="utf-8")
    assert status == 0 and after != before
    assert "AUC 0.500 · Dice" in after and "AUC 0.500 · Dice" not in before
    outside = [part.split("<!-- END generated:headline -->")[-1] for part in (before, after)]
    assert before.split("<!-- BEGIN generated:headline -->")[0] == after.split("<!-- BEGIN generated:headline -->")[0]
    assert outside[0] == outside[1]


def test_check_reports_a_stale_doc_and_writes_nothing(tmp_path, capsys):
    # Prepare: a README whose headline block holds an old table
    root = _copy_repo_docs(tmp_path)
    readme = root / "README.md"
    stale = readme.read_text(encoding="utf-8").replace("AUC 0.", "AUC 9.", 1)
    readme.write_text(stale, encoding="utf-8")
    # Execute
    status = docs_tables.main(["--root", str(root), "--check"])
    # Assert
    assert status == 1
    assert "README.md" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == stale


def test_a_missing_results_folder_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as error:
        docs_tables.main(["--root", str(tmp_path)])
    assert error.value.code == 2


def test_a_missing_results_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"throughput_128px\.json is missing.*rerun the generator"):
        TABLES["throughput"](tmp_path)


def test_replace_blocks_fills_named_blocks_keeps_others_and_their_indentation():
    # Prepare: a known block, an indented one (inside a list item), an unknown one, the older marker spelling
    text = (
        "intro\n<!-- BEGIN generated:a -->\nold\n<!-- END generated:a -->\n"
        "- item\n\n  <!-- BEGIN generated:b -->\n  old\n  <!-- END generated:b -->\n"
        "<!-- BEGIN generated:other -->\nkeep\n<!-- END generated:other -->\n"
        "<!-- BEGIN GENERATED: c -->\nold\n<!-- END GENERATED: c -->\nend\n"
    )
    tables = {"a": "| x |\n|---|\n| 1 |", "b": "| y |\n|---|", "c": "C"}
    # Execute
    out, replaced = replace_blocks(text, tables)
    # Assert
    assert replaced == ["a", "b", "c"]
    assert "<!-- BEGIN generated:a -->\n| x |\n|---|\n| 1 |\n<!-- END generated:a -->" in out
    assert "  <!-- BEGIN generated:b -->\n  | y |\n  |---|\n  <!-- END generated:b -->" in out
    assert "<!-- BEGIN generated:other -->\nkeep\n<!-- END generated:other -->" in out
    assert "<!-- BEGIN GENERATED: c -->\nC\n<!-- END GENERATED: c -->\nend\n" in out
    assert out.startswith("intro\n") and replace_blocks(out, tables)[0] == out  # idempotent


@pytest.mark.parametrize(
    ("values", "digits", "expected"),
    [([0.5, None, 0.71234], 2, "0.50–0.71"), ([0.333, 0.3334], 2, "0.33"), ([None], 2, "–"), ([1.25], 1, "1.2")],
)
def test_range_cell_hand_worked(values, digits, expected):
    assert _range(values, digits) == expected


@pytest.mark.parametrize("fused", [False, True])
def test_steady_rows_are_the_rounds_round_overhead_summarises(fused):
    # Prepare: four rounds with hand-picked wall and compute seconds
    rows = [
        {"round": i + 1, "time/round_s": wall, "time/client_critical_s": 2.0, "bytes/sent": 1.0, "bytes/received": 1.0}
        for i, wall in enumerate((9.0, 3.0, 5.0, 8.0))
    ]
    summary = summarise("simulation", rows, fused)
    # Execute
    steady = steady_rows(summary)
    # Assert: rounds 2-4 unfused (median ratio 2.5), rounds 2-3 fused (median of 1.5 and 2.5)
    assert [r["round"] for r in steady] == ([2, 3] if fused else [2, 3, 4])
    ratio = statistics.median(r["time/round_s"] / r["time/client_critical_s"] for r in steady)
    assert ratio == pytest.approx(summary["steady_state_ratio"]) == pytest.approx(2.0 if fused else 2.5)


def test_headline_figures_come_from_the_results_files():
    # Prepare
    results = ROOT / "docs" / "results"
    shipped = load(results, "centralized_shipped_10min.json")["test"]
    # Execute
    headline = TABLES["headline"](results)
    # Assert
    assert f"AUC {shipped['classification/auc']:.3f}" in headline
    assert "BNP matching" in headline and "img/s" in headline and "loopback deployment" in headline


def test_an_output_block_is_the_saved_benchmark_output_verbatim(tmp_path):
    # Prepare: a results folder with one saved output
    (tmp_path / "run.txt").write_text("$ python -m benchmarks.x\nline 1\n\n", encoding="utf-8")
    # Execute
    blocks = docs_tables.output_blocks(tmp_path)
    # Assert
    assert blocks == {"output.run.txt": "```text\n$ python -m benchmarks.x\nline 1\n```"}
    assert blocks["output.run.txt"] == "```text\n$ python -m benchmarks.x\nline 1\n```"


def test_curves_and_offline_checks_follow_the_probe_results_file(tmp_path):
    # Prepare: change one curve value and one offline check in a copy of the results
    results = shutil.copytree(ROOT / "docs" / "results", tmp_path / "results")
    path = results / "classification_probe_10min.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["runs"]["C1"]["val_auc_per_epoch"][0] = 0.123
    data["offline_checks"]["P2 best.pt"]["linear layer alone"] = 0.321
    path.write_text(json.dumps(data), encoding="utf-8")
    # Execute
    curves, checks = TABLES["curves"](results), TABLES["offline_checks"](results)
    # Assert: the changed values appear in their rows, every curve row has one cell per epoch of the longest run
    c1 = next(row for row in curves.splitlines() if row.startswith("| C1: ") and "| validation AUC |" in row)
    assert "| 0.12 |" in c1
    assert "| 0.321 |" in next(row for row in checks.splitlines() if row.startswith("| P2 best.pt |"))
    widths = {row.count("|") for row in curves.splitlines()}
    assert len(widths) == 1


def test_throughput_parts_add_up_and_the_profile_covers_every_category_of_each_profiled_step():
    # Prepare
    results = ROOT / "docs" / "results"
    profiled = [r for r in load(results, "throughput_128px.json")["results"] if r.get("profile")]
    # Execute
    parts = TABLES["throughput_parts"](results).splitlines()[2:]
    profile = TABLES["throughput_profile"](results).splitlines()[2:]
    # Assert: the part shares of a configuration sum to 100 %, one profile row per (step, category)
    for row in parts:
        shares = [float(cell.strip().removesuffix(" %")) for cell in row.strip("|").split("|")[2:]]
        assert sum(shares) == pytest.approx(100.0, abs=0.2)
    assert len(profile) == sum(len(r["profile"]["category_ms"]) for r in profiled) > 0
