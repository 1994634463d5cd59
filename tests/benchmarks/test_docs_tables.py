"""The docs generator: the committed docs equal its output, and its tables follow the results files."""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import docs_tables
from benchmarks.doc_blocks import block_names, replace_blocks, span
from benchmarks.result_files import ResultFiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path):
    """A copy of every doc the generator rewrites and of the results folder."""
    for doc in docs_tables.find_docs(ROOT):
        target = tmp_path / doc.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(doc, target)
    shutil.copytree(ROOT / "docs" / "results", tmp_path / "docs" / "results", dirs_exist_ok=True)
    return tmp_path


def test_committed_docs_are_what_the_generator_writes(checkout):
    # Prepare: the docs that hold generated blocks
    docs = [d for d in docs_tables.find_docs(checkout) if block_names(d.read_text(encoding="utf-8"))]
    # Execute
    status = docs_tables.main(["--root", str(checkout)])
    # Assert: nothing changed, so every committed doc is up to date (else run python -m benchmarks.docs_tables)
    assert status == 0
    assert {"README.md", "docs/measurements.md", "docs/RESULTS.md", "benchmarks/README.md"} <= {
        str(d.relative_to(checkout)) for d in docs
    }
    for doc in docs:
        committed = (ROOT / doc.relative_to(checkout)).read_text(encoding="utf-8")
        assert doc.read_text(encoding="utf-8") == committed, f"{doc.relative_to(checkout)} is out of date"


def test_a_changed_results_value_changes_the_tables_and_check_reports_the_docs(checkout):
    # Prepare: a different test AUC for the shipped-config run
    path = checkout / "docs" / "results" / "centralized_shipped_10min.json"
    data = json.loads(path.read_text())
    data["test"]["classification/auc"] = 0.5
    path.write_text(json.dumps(data))
    readme_before = (checkout / "README.md").read_text(encoding="utf-8")
    # Execute
    check_status = docs_tables.main(["--root", str(checkout), "--check"])
    write_status = docs_tables.main(["--root", str(checkout)])
    # Assert: --check writes nothing and fails; the rewrite puts the new value where the old one stood
    assert check_status == 1 and write_status == 0
    readme = (checkout / "README.md").read_text(encoding="utf-8")
    assert "test AUC 0.500" in readme and "test AUC 0.820" not in readme and readme != readme_before
    assert "| 0.500 |" in (checkout / "docs" / "measurements.md").read_text(encoding="utf-8")
    assert docs_tables.main(["--root", str(checkout), "--check"]) == 0


def test_blocks_are_replaced_by_name_and_the_text_around_them_is_kept():
    # Prepare
    text = "intro\n<!-- BEGIN generated:a -->\nold\n<!-- END generated:a -->\nmiddle\n<!-- BEGIN generated:b -->\n" \
        "keep\n<!-- END generated:b -->\nend\n"
    # Execute
    once, replaced = replace_blocks(text, {"a": "| new |\n"})
    twice, _ = replace_blocks(once, {"a": "| new |\n"})
    # Assert
    assert replaced == ["a"] and once == twice
    assert once == text.replace("\nold\n", "\n| new |\n")


def test_an_unclosed_block_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="no matching end marker"):
        block_names("<!-- BEGIN generated:a -->\nbody\n<!-- END generated:b -->\n")


def test_markers_quoted_inside_a_line_are_prose_not_blocks():
    # Prepare
    text = "Blocks look like `<!-- BEGIN generated:NAME -->` ... `<!-- END generated:NAME -->`.\n"
    # Execute / Assert
    assert block_names(text) == []
    assert replace_blocks(text, {"NAME": "x"}) == (text, [])


def test_an_unknown_block_or_a_missing_results_file_stops_with_the_doc_and_the_fix(tmp_path, capsys):
    # Prepare
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "README.md").write_text("<!-- BEGIN generated:nonesuch -->\n<!-- END generated:nonesuch -->\n")
    (tmp_path / "docs" / "other.md").write_text("<!-- BEGIN generated:headline -->\n<!-- END generated:headline -->\n")
    # Execute
    unknown = docs_tables.main(["--root", str(tmp_path), str(tmp_path / "README.md")])
    unknown_error = capsys.readouterr().err
    missing = docs_tables.main(["--root", str(tmp_path), str(tmp_path / "docs" / "other.md")])
    missing_error = capsys.readouterr().err
    # Assert
    assert unknown == 2 and "README.md" in unknown_error and "no generated table named 'nonesuch'" in unknown_error
    assert missing == 2 and "centralized_shipped_10min.json is missing" in missing_error
    assert "mtmedformer train --config configs/centralized_mammography.yaml" in missing_error


def test_an_output_block_quotes_the_saved_benchmark_output_verbatim(tmp_path):
    # Prepare
    (tmp_path / "run.txt").write_text("$ python -m benchmarks.x\nline 1\n\n")
    # Execute
    body = docs_tables.build_block("output.run.txt", ResultFiles(tmp_path))
    # Assert
    assert body == "```text\n$ python -m benchmarks.x\nline 1\n```"


@pytest.mark.parametrize(
    ("values", "expected"), [([0.5, 0.59, 0.52], "0.50–0.59"), ([0.7, 0.701], "0.70"), ([], "–")]
)
def test_span_cells(values, expected):
    assert span(values) == expected
