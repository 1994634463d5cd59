"""Fill the generated blocks of the docs from the results files in ``docs/results``.

Every block ``<!-- BEGIN generated:NAME -->`` ... ``<!-- END generated:NAME -->`` (see
:mod:`benchmarks.markdown`) of ``README.md``, ``docs/*.md``, ``docs/decisions/*.md`` and
``benchmarks/README.md`` whose ``NAME`` is a
table of :data:`benchmarks.results_tables.TABLES` or of the federated comparison
(:func:`benchmarks.fl_comparison.report.build_tables`), or ``output.FILE.txt`` for a saved benchmark output in the
results folder, gets that table, made from the JSON files of
``--results``; the text around the blocks is left as written. A block with any other name is left alone and
listed, so a misspelt name shows.

Usage (from the repository root)::

    python -m benchmarks.docs_tables            # rewrite the docs whose tables changed
    python -m benchmarks.docs_tables --check    # write nothing; exit 1 if a doc is not up to date

Run it after a benchmark wrote a new results file (``docs/results/*.json``); the test suite checks that the
committed docs are what it generates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.fl_comparison.report import build_tables as fl_comparison_tables
from benchmarks.fl_comparison.report import load_parts
from benchmarks.markdown import block_names, replace_blocks
from benchmarks.results_tables import TABLES
from mtmedformer.atomic import atomic_write_text

OUTPUT_PREFIX = "output."
DOCS = ("README.md", "docs/*.md", "docs/decisions/*.md", "benchmarks/README.md")
"""The Markdown files with generated blocks, as globs relative to the repository root."""


def build_tables(results: Path) -> dict[str, str]:
    """Every table by block name, made from the results folder ``results``.

    Besides the tables, every saved benchmark output ``results/FILE.txt`` is a block ``output.FILE.txt``
    (:func:`output_blocks`), so a doc can show a run's output without copying it.
    """
    tables = fl_comparison_tables(load_parts(results))
    tables.update((name, make(results)) for name, make in TABLES.items())
    tables.update(output_blocks(results))
    return tables


def output_blocks(results: Path) -> dict[str, str]:
    """``output.FILE.txt`` -> the saved benchmark output ``results/FILE.txt`` verbatim, as a code block."""
    return {
        f"{OUTPUT_PREFIX}{path.name}": "```text\n" + path.read_text(encoding="utf-8").rstrip("\n") + "\n```"
        for path in sorted(results.glob("*.txt"))
    }


def doc_paths(root: Path) -> list[Path]:
    """The files of :data:`DOCS` under ``root`` that exist, in a fixed order."""
    return [path for pattern in DOCS for path in sorted(root.glob(pattern)) if path.is_file()]


def render(root: Path, tables: Mapping[str, str]) -> dict[Path, tuple[str, str, list[str]]]:
    """``path -> (current text, generated text, names of blocks without a table)`` for every doc with blocks."""
    out = {}
    for path in doc_paths(root):
        text = path.read_text(encoding="utf-8")
        names = block_names(text)
        if names:
            generated, _ = replace_blocks(text, tables)
            out[path] = (text, generated, [n for n in names if n not in tables])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the docs; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: this folder)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: ROOT/docs/results)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a doc is not up to date")
    args = parser.parse_args(argv)
    results = args.results or args.root / "docs" / "results"
    if not results.is_dir():
        parser.error(f"no results folder at {results}: run from the repository root or pass --root / --results")
    stale = []
    for path, (text, generated, unknown) in render(args.root, build_tables(results)).items():
        for name in unknown:
            print(f"{path}: block '{name}' has no table here; left as it is", file=sys.stderr)
        if generated == text:
            continue
        stale.append(path)
        if not args.check:
            atomic_write_text(path, generated)
            print(f"updated {path}")
    if args.check and stale:
        print("not up to date (run python -m benchmarks.docs_tables): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
