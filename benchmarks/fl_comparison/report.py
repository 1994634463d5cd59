"""Tables, plots and results JSON of the federated comparison, for ``docs/RESULTS.md``.

Reads whatever parts exist in ``--out`` (``one_shot.json``, ``one_shot_learn.json``, ``task_split.json``,
``iterative.json``, ``iterative_learn.json``, ``bounds.json``, ``bounds_learn.json``, ``identity_check.json``),
writes to ``--results``:

- the JSON files themselves (small: metrics only, no weights);
- ``iterative_<task>.png`` (``iterative_learn_<task>.png``): pooled-test metric per round, a panel per (local
  epochs, alpha), a line per strategy (mean over seeds, band one sd), with the centralized and local-only
  bounds of the same scale as horizontal lines (:mod:`benchmarks.fl_comparison.iterative_report`);
- ``one_shot.png``: pooled-test metric per task of every site model and merge (mean and sd over seeds), per
  variant (:mod:`benchmarks.fl_comparison.one_shot_report`);
- ``matching_moved.png``: fraction of units matching moved per round, per kind of permutation group;
- ``tables.md``: every table,

and, with ``--doc``, fills each block between ``<!-- BEGIN generated:<name> -->`` and
``<!-- END generated:<name> -->`` of that Markdown file with the table of that name
(:func:`benchmarks.markdown.update_doc`). ``python -m benchmarks.docs_tables`` fills the same blocks from the
copies in ``docs/results``.

Usage::

    python -m benchmarks.fl_comparison.report [--out runs/fl-comparison] [--results docs/results]
        [--doc docs/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.fl_comparison.common import SCORE_LABEL, SCORES
from benchmarks.fl_comparison.iterative_report import iterative_tables, moved_table, plot_iterative, plot_moved
from benchmarks.fl_comparison.one_shot_report import claim_table, one_shot_tables, plot_one_shot
from benchmarks.fl_comparison.task_split_report import task_split_tables
from benchmarks.markdown import fmt, table, update_doc

PARTS = ("one_shot", "one_shot_learn", "task_split", "task_split_partial", "iterative", "iterative_learn", "bounds",
         "bounds_learn", "identity_check")
ITERATIVE = {"iterative": "bounds", "iterative_learn": "bounds_learn"}  # iterative part -> bounds at its scale


def load_parts(out: Path) -> dict[str, dict[str, Any]]:
    """Every part's results JSON found in ``out``."""
    return {p: json.loads((out / f"{p}.json").read_text()) for p in PARTS if (out / f"{p}.json").exists()}


def bounds_table(bounds: Mapping[str, Any]) -> str:
    """Pooled-test scores of the centralized model and of every local-only model."""
    c = bounds["centralized"]
    rows = [
        [
            "centralized",
            "pooled",
            str(c["num_train"]),
            f"{c['epochs_run']}/{c['epochs_planned']}",
            *(fmt(c["pooled_test"][k]) for _, k in SCORES),
        ]
    ]
    for partition, data in bounds.get("local", {}).items():
        for name, client in data["clients"].items():
            rows.append(
                [
                    f"local-only ({partition})",
                    name,
                    str(client["num_train"]),
                    f"{client['epochs_run']}/{client['epochs_planned']}",
                    *(fmt(client["pooled_test"][k]) for _, k in SCORES),
                ]
            )
        rows.append(
            [
                f"local-only ({partition})",
                "mean of clients",
                "",
                "",
                *(fmt(data["mean_pooled_test"][k]) for _, k in SCORES),
            ]
        )
    return table(["model", "client", "train images", "epochs run/planned", *(SCORE_LABEL[t] for t, _ in SCORES)], rows)


def identity_table(res: Mapping[str, Any]) -> str:
    """The shared-initialisation identity check."""
    rows = []
    for key in ("round-1", "round-2"):
        r = res[key]
        smallest = r["smallest_reference_scales"][0]
        rows.append(
            [
                key,
                fmt(r["fedavg_step_norm"]),
                fmt(r["matched_minus_fedavg_norm"]),
                fmt(r["relative_gap"]),
                ", ".join(f"{v:.2f}" for v in r["moved_residual"].values()),
                f"{smallest['tensor']} ({smallest['mean_square']:.1e})",
            ]
        )
    return table(
        [
            "check",
            "‖FedAvg − reference‖",
            "‖matched − FedAvg‖",
            "ratio",
            "residual moved per client",
            "smallest reference mean square",
        ],
        rows,
    )


def conditions_table(parts: Mapping[str, Mapping[str, Any]]) -> str:
    """Machine, load and wall time of every part."""
    rows = []
    for name, res in parts.items():
        m = res.get("machine", {})
        seconds = res.get("seconds")
        if name in ITERATIVE:  # runs may be resumed or reused: report their own start and summed wall time
            seconds = sum(r.get("seconds", 0.0) for r in res["runs"].values())
            m = next((r["started"] for r in res["runs"].values() if r.get("started")), m)
        rows.append(
            [
                name,
                m.get("date", ""),
                f"{m.get('cpu', '')}, {m.get('logical_cpus')} logical CPUs",
                str(m.get("torch_threads")),
                str(m.get("load_average_1_5_15min")),
                m.get("torch", ""),
                "–" if seconds is None else f"{seconds / 60:.1f}",
            ]
        )
    return table(
        ["part", "started", "CPU", "torch threads", "load avg at start (1/5/15 min)", "torch", "wall min"], rows
    )


def build_tables(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Every table that the parts present allow, by name."""
    tables: dict[str, str] = {"conditions": conditions_table(parts)}
    for name in ("one_shot", "one_shot_learn"):
        if name in parts:
            tables[name] = one_shot_tables(parts[name])
    for name in ("task_split", "task_split_partial"):
        if name in parts:
            tables[name] = task_split_tables(parts[name])
    if any(name in parts for name in ("one_shot", "one_shot_learn", "task_split", "task_split_partial", *ITERATIVE)):
        tables["claim"] = claim_table(parts)
    for name, bounds_part in ITERATIVE.items():
        if name in parts:
            tables[name] = iterative_tables(parts[name], parts.get(bounds_part))
            tables["moved" if name == "iterative" else f"moved_{name.removeprefix('iterative_')}"] = moved_table(
                parts[name]
            )
    for name in ("bounds", "bounds_learn"):
        if name in parts:
            tables[name] = bounds_table(parts[name])
    if "identity_check" in parts:
        tables["identity_check"] = identity_table(parts["identity_check"])
    return tables


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Write tables, plots and JSON copies; optionally update the doc. Return the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/fl-comparison", help="folder the parts wrote their JSON to")
    parser.add_argument("--results", default="docs/results", help="folder for plots, tables and JSON copies")
    parser.add_argument("--doc", default=None, help="Markdown file whose generated blocks to update")
    args = parser.parse_args(argv)
    out, results = Path(args.out), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    parts = load_parts(out)
    if not parts:
        raise SystemExit(f"no results in {out}: run the parts first (python -m benchmarks.fl_comparison --out {out})")
    for name in parts:
        if (out / f"{name}.json").resolve() != (results / f"{name}.json").resolve():
            shutil.copyfile(out / f"{name}.json", results / f"{name}.json")
    bounds = parts.get("bounds")
    for name, bounds_part in ITERATIVE.items():
        if name in parts:
            plot_iterative(parts[name], parts.get(bounds_part), results, name)
            moved = "matching_moved.png" if name == "iterative" else f"matching_moved_{name}.png"
            plot_moved(parts[name], results, moved)
    if "one_shot" in parts:
        plot_one_shot(parts["one_shot"], bounds, results)
    if "one_shot_learn" in parts:
        plot_one_shot(parts["one_shot_learn"], parts.get("bounds_learn"), results, "one_shot_learn.png")
    tables = build_tables(parts)
    (results / "tables.md").write_text(
        "\n\n".join(f"## {name}\n\n{body}" for name, body in tables.items()) + "\n", encoding="utf-8"
    )
    if args.doc:
        replaced = update_doc(Path(args.doc), tables)
        print(f"updated {args.doc}: {', '.join(replaced) or 'no generated blocks found'}")
    return tables


if __name__ == "__main__":
    main()
