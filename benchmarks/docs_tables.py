"""Rewrite the generated blocks of the docs from the results files, so no doc quotes a figure by hand.

Every ``<!-- BEGIN generated:NAME -->`` ... ``<!-- END generated:NAME -->`` block (:mod:`benchmarks.doc_blocks`)
in ``README.md``, ``docs/*.md``, ``docs/decisions/*.md`` and ``benchmarks/README.md`` gets the table ``NAME`` of
:data:`TABLES`, built from ``docs/results/*.json``; a block named ``output.FILE`` gets the saved benchmark output
``docs/results/FILE`` verbatim as a code block. Run it after a benchmark wrote new results::

    python -m benchmarks.docs_tables            # rewrite every doc
    python -m benchmarks.docs_tables --check    # exit 1, naming the docs, if any doc is out of date

A block whose name has no table, or whose results file is missing, stops the run with the name and the fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.doc_blocks import block_names, fmt, pct, replace_blocks, span, table
from benchmarks.fl_comparison.report import build_tables as fl_tables
from benchmarks.fl_comparison.report import load_parts
from benchmarks.result_files import ResultFiles
from benchmarks.tables_federated import (
    fl_final_scores,
    fl_summary_table,
    overhead_earlier_table,
    overhead_table,
    trace_table,
)
from benchmarks.tables_training import (
    SHIPPED,
    THROUGHPUT,
    centralized_table,
    curves_table,
    offline_checks_table,
    pooling_table,
    probe_runs_table,
    throughput_bf16_table,
    throughput_conditions,
    throughput_parts_table,
    throughput_profile_table,
    throughput_table,
    variants_table,
)
from mtmedformer.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DOC_PATTERNS = ("README.md", "docs/*.md", "docs/decisions/*.md", "benchmarks/README.md")
OUTPUT_PREFIX = "output."
FL_PARTS = ("conditions", "one_shot", "iterative", "moved", "bounds", "identity_check")


def headline_table(files: ResultFiles) -> str:
    """The README's table: the current headline figure of each kind of measurement, with its results file."""
    shipped = files.json(SHIPPED)
    test = shipped["test"]
    iterative, bounds, one_shot = files.json("iterative.json"), files.json("bounds.json"), files.json("one_shot.json")
    base = iterative["settings"]["base_config"]
    scores = fl_final_scores(files)
    labels = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "bnp_matching": "BNP matching"}
    independent = one_shot["variants"]["independent"]
    merged = independent["models"]
    throughput = {
        r["spec"]["precision"]: r
        for r in files.json(THROUGHPUT)["results"]
        if (r["spec"]["preset"], r["spec"]["image_size"], r["spec"]["heads"]) == ("tiny", 128, "all")
    }
    fp32, bf16 = throughput["fp32"], throughput["bf16"]
    overhead = {
        name: files.json(name)["results"][0]
        for name in ("round_overhead_sim_fused.json", "round_overhead_packed_demo.json",
                     "round_overhead_packed_400x3.json")
    }  # fmt: skip
    link = "[{}](docs/results/{}.json)".format
    clients = len(next(iter(iterative["partitions"].values())))
    rows = [
        [
            f"centralized, shipped config, {shipped['epochs']} epochs in 10 min",
            f"test AUC {fmt(test['classification/auc'])}, Dice {fmt(test['segmentation/dice'])}, "
            f"mAP@0.5 {fmt(test['detection/map50'])}",
            link("centralized_shipped", "centralized_shipped_10min"),
        ],
        [
            f"federated, {clients} clients, label skew, {iterative['settings']['rounds']} rounds "
            f"({base['data']['image_size']} px)",
            "pooled-test mean: "
            + ", ".join(f"{labels.get(s, s)} {span(v, 3)}" for s, v in scores.items())
            + f"; centralized {fmt(bounds['centralized']['pooled_test']['mean_score'])}",
            link("iterative", "iterative") + ", " + link("bounds", "bounds"),
        ],
        [
            f"one-shot merge of {len(one_shot['sites'])} independently trained sites",
            f"best site {fmt(merged[independent['best_site']]['pooled_test']['mean_score'])}, "
            f"FedAvg {fmt(merged['fedavg']['pooled_test']['mean_score'])}, "
            f"matching {fmt(merged['matching']['pooled_test']['mean_score'])}",
            link("one_shot", "one_shot"),
        ],
        [
            "training throughput, {preset}, {image_size} px, batch {batch_size}".format(**fp32["spec"]),
            f"fp32 {fmt(fp32['images_per_s'], 2)} img/s (MFU {pct(fp32['mfu_fp32_peak'])}), "
            f"bf16 {fmt(bf16['images_per_s'], 2)} img/s ({pct(bf16['mfu_fp32_peak'])})",
            link("throughput_128px", "throughput_128px"),
        ],
        [
            "round wall time / clients' compute",
            f"simulation {overhead['round_overhead_sim_fused.json']['steady_state_ratio']:.2f}×; loopback "
            f"{overhead['round_overhead_packed_demo.json']['steady_state_ratio']:.2f}× (demo), "
            f"{overhead['round_overhead_packed_400x3.json']['steady_state_ratio']:.2f}× (400 images × 3 epochs)",
            "[round_overhead_*](docs/results/)",
        ],
    ]
    return table(["what", "figure", "results"], rows)


TABLES: dict[str, Callable[[ResultFiles], str]] = {
    "headline": headline_table,
    "centralized": centralized_table,
    "curves": curves_table,
    "probe_runs": probe_runs_table,
    "offline_checks": offline_checks_table,
    "pooling": pooling_table,
    "variants": variants_table,
    "throughput": throughput_table,
    "throughput_conditions": throughput_conditions,
    "throughput_bf16": throughput_bf16_table,
    "throughput_parts": throughput_parts_table,
    "throughput_profile": throughput_profile_table,
    "overhead": overhead_table,
    "overhead_earlier": overhead_earlier_table,
    "trace": trace_table,
    "fl_summary": fl_summary_table,
    # the federated comparison's tables, as benchmarks/fl_comparison/report.py builds them
    **{name: (lambda files, name=name: fl_tables(load_parts(files.folder))[name]) for name in FL_PARTS},
}
"""Block name -> the function that builds its body from the results folder."""


def build_block(name: str, files: ResultFiles) -> str:
    """The body of block ``name``.

    Raises
    ------
    KeyError
        If no table has that name; the message lists the names there are.
    """
    if name.startswith(OUTPUT_PREFIX):
        return "```text\n" + files.text(name[len(OUTPUT_PREFIX) :]) + "\n```"
    if name not in TABLES:
        raise KeyError(
            f"no generated table named {name!r}: use one of {sorted(TABLES)} or {OUTPUT_PREFIX}<file in the results "
            "folder>, or add the table to benchmarks/docs_tables.py"
        )
    return TABLES[name](files)


def find_docs(root: Path) -> list[Path]:
    """Every Markdown file of :data:`DOC_PATTERNS` under ``root``, in a stable order."""
    return [path for pattern in DOC_PATTERNS for path in sorted(root.glob(pattern)) if path.is_file()]


def regenerate(docs: Sequence[Path], files: ResultFiles) -> dict[Path, str]:
    """The new text of every doc in ``docs`` that has generated blocks, keyed by path (nothing is written).

    Raises
    ------
    ValueError
        If a doc's markers are unbalanced or a block cannot be built; the message names the doc.
    """
    built: dict[str, str] = {}
    out: dict[Path, str] = {}
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        try:
            names = block_names(text)
            for name in names:
                if name not in built:
                    built[name] = build_block(name, files)
        except (KeyError, ValueError, FileNotFoundError) as error:
            message = error.args[0] if isinstance(error, KeyError) else str(error)
            raise ValueError(f"{doc}: {message}") from error
        if names:
            out[doc] = replace_blocks(text, built)[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the generated blocks of the docs. Returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="*", type=Path, help="Markdown files (default: every doc of the repository)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: <root>/docs/results)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a doc is out of date")
    args = parser.parse_args(argv)
    files = ResultFiles(args.results or args.root / "docs" / "results")
    docs = args.docs or find_docs(args.root)
    try:
        texts = regenerate(docs, files)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stale = [doc for doc, text in texts.items() if doc.read_text(encoding="utf-8") != text]
    if args.check:
        for doc in stale:
            print(f"out of date: {doc} (run python -m benchmarks.docs_tables)", file=sys.stderr)
        return 1 if stale else 0
    for doc in stale:
        atomic_write_text(doc, texts[doc])
        print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
