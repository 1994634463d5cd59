"""Tables, plots and results JSON of the federated comparison, for ``docs/RESULTS.md``.

Reads whatever parts exist in ``--out`` (``one_shot.json``, ``one_shot_learn.json``, ``task_split.json``,
``iterative.json``, ``bounds.json``, ``identity_check.json``), writes to ``--results``:

- the JSON files themselves (small: metrics only, no weights);
- ``iterative_<task>.png``: pooled-test metric per round, a panel per (local epochs, alpha), a line per
  strategy, with the centralized and local-only bounds as horizontal lines;
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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from benchmarks.fl_comparison.common import METRIC_LABEL, MOVED_KINDS, TASK_METRIC
from benchmarks.fl_comparison.one_shot_report import claim_table, one_shot_tables, plot_one_shot
from benchmarks.fl_comparison.task_split_report import task_split_tables
from benchmarks.markdown import fmt, table, update_doc

PARTS = ("one_shot", "one_shot_learn", "task_split", "iterative", "bounds", "identity_check")
STRATEGY_LABEL = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "bnp_matching": "BNP matching"}
SCORES = (*TASK_METRIC.items(), ("mean", "mean_score"))
SCORE_LABEL = {**METRIC_LABEL, "mean": "mean"}


def load_parts(out: Path) -> dict[str, dict[str, Any]]:
    """Every part's results JSON found in ``out``."""
    return {p: json.loads((out / f"{p}.json").read_text()) for p in PARTS if (out / f"{p}.json").exists()}


def _bound_rows(bounds: Mapping[str, Any] | None, alpha: str | None) -> dict[str, dict[str, Any]]:
    """Centralized and (for ``alpha``) local-only mean pooled-test scores, keyed by row label."""
    if not bounds:
        return {}
    rows = {"centralized (upper bound)": bounds["centralized"]["pooled_test"]}
    key = "site" if alpha is None else f"dirichlet:{alpha}"
    local = bounds.get("local", {}).get(key)
    if local is None and alpha is not None:  # the partition may be spelled 100.0 vs 100
        local = next(
            (
                v
                for k, v in bounds.get("local", {}).items()
                if k.startswith("dirichlet:") and float(k.split(":")[1]) == float(alpha)
            ),
            None,
        )
    if local:
        rows["local-only, mean of clients (lower bound)"] = local["mean_pooled_test"]
    return rows


def iterative_tables(res: Mapping[str, Any], bounds: Mapping[str, Any] | None) -> str:
    """Final-round pooled-test tables of the iterative comparison, one per task, bounds included."""
    runs = res["runs"]
    settings = res["settings"]
    columns = [(f"{a:g}", e) for e in settings["local_epochs"] for a in settings["alphas"]]
    blocks = []
    for task, key in SCORES:
        header = ["strategy", *(f"α={a}, E={e}" for a, e in columns)]
        rows = []
        for strategy in settings["strategies"]:
            cells = []
            for a, e in columns:
                run = runs.get(f"a{a}-e{e}-{strategy}")
                cells.append(fmt(run["final"]["pooled_test"].get(key)) if run else "not run")
            rows.append([STRATEGY_LABEL.get(strategy, strategy), *cells])
        for label in _bound_rows(bounds, None):  # centralized does not depend on the partition
            if label.startswith("centralized"):
                rows.append([label, *(fmt(bounds["centralized"]["pooled_test"].get(key)) for _ in columns)])
        if bounds:
            cells = []
            for a, _ in columns:
                local = _bound_rows(bounds, a).get("local-only, mean of clients (lower bound)")
                cells.append(fmt(local.get(key)) if local else "not run")
            rows.append(["local-only, mean of clients (lower bound)", *cells])
        blocks.append(
            f"**{SCORE_LABEL[task]}, pooled test split, after round {settings['rounds']}**\n\n" + table(header, rows)
        )
    return "\n\n".join(blocks)


def moved_table(res: Mapping[str, Any]) -> str:
    """Mean fraction of units matching moved, per round, in every ``bnp_matching`` run."""
    rows = []
    for name, run in res["runs"].items():
        if run["strategy"] != "bnp_matching":
            continue
        for entry in run["rounds"]:
            moved = entry.get("moved", {})
            rows.append(
                [
                    name,
                    str(entry["round"]),
                    *(fmt(moved.get(k)) for k in MOVED_KINDS),
                    fmt(entry.get("matching_seconds")),
                ]
            )
    return table(["run", "round", *MOVED_KINDS, "matching s"], rows)


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
        if name == "iterative":  # runs may be resumed or reused: report their own start and summed wall time
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


def _bound_lines(ax: Any, bounds: Mapping[str, Any] | None, alpha: str, key: str) -> None:
    for label, scores in _bound_rows(bounds, alpha).items():
        value = scores.get(key)
        if value is not None:
            style = "--" if label.startswith("centralized") else ":"
            ax.axhline(value, color="black", linestyle=style, linewidth=1, label=label.split(" (")[0])


def plot_iterative(res: Mapping[str, Any], bounds: Mapping[str, Any] | None, folder: Path) -> list[Path]:
    """One figure per task: rows = local epochs, columns = alpha, a line per strategy."""
    settings, runs = res["settings"], res["runs"]
    alphas, epochs = [f"{a:g}" for a in settings["alphas"]], settings["local_epochs"]
    paths = []
    for task, key in SCORES:
        fig, axes = plt.subplots(
            len(epochs), len(alphas), figsize=(4 * len(alphas), 3 * len(epochs)), squeeze=False, sharey=True
        )
        for i, e in enumerate(epochs):
            for j, a in enumerate(alphas):
                ax = axes[i][j]
                for strategy in settings["strategies"]:
                    run = runs.get(f"a{a}-e{e}-{strategy}")
                    if not run:
                        continue
                    points = [(r["round"], r["pooled_test"].get(key)) for r in run["rounds"]]
                    points = [(x, y) for x, y in points if y is not None]
                    if points:
                        ax.plot(
                            *zip(*points, strict=True),
                            marker="o",
                            markersize=3,
                            label=STRATEGY_LABEL.get(strategy, strategy),
                        )
                _bound_lines(ax, bounds, a, key)
                ax.set_title(f"α = {a}, E = {e}", fontsize=9)
                ax.set_xlabel("round", fontsize=8)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
                if j == 0:
                    ax.set_ylabel(f"pooled test {SCORE_LABEL[task]}", fontsize=8)
        handles, labels = axes[0][0].get_legend_handles_labels()
        ncol = max(1, min(len(labels), 2 * len(alphas)))  # 6 entries fit under 3 panels, 2 under one
        legend_rows = -(-len(labels) // ncol)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
        fig.tight_layout(rect=(0, 0.05 * legend_rows / len(epochs) + 0.02, 1, 1))
        path = folder / f"iterative_{task}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_moved(res: Mapping[str, Any], folder: Path) -> Path | None:
    """Residual-stream and MLP moved fractions per round of every matching run."""
    runs = {n: r for n, r in res["runs"].items() if r["strategy"] == "bnp_matching"}
    if not runs:
        return None
    kinds = ("residual", "MLP hidden")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for name, run in runs.items():
            points = [(r["round"], r.get("moved", {}).get(kind)) for r in run["rounds"]]
            points = [(x, y) for x, y in points if y is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name.removesuffix("-bnp_matching"))
        ax.set_title(f"units moved by matching: {kind}", fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean fraction over clients", fontsize=8)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = folder / "matching_moved.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def build_tables(parts: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Every table that the parts present allow, by name."""
    bounds = parts.get("bounds")
    tables: dict[str, str] = {"conditions": conditions_table(parts)}
    for name in ("one_shot", "one_shot_learn"):
        if name in parts:
            tables[name] = one_shot_tables(parts[name])
    if "task_split" in parts:
        tables["task_split"] = task_split_tables(parts["task_split"])
    if any(name in parts for name in ("one_shot", "one_shot_learn", "task_split", "iterative")):
        tables["claim"] = claim_table(parts)
    if "iterative" in parts:
        tables["iterative"] = iterative_tables(parts["iterative"], bounds)
        tables["moved"] = moved_table(parts["iterative"])
    if bounds:
        tables["bounds"] = bounds_table(bounds)
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
    if "iterative" in parts:
        plot_iterative(parts["iterative"], bounds, results)
        plot_moved(parts["iterative"], results)
    if "one_shot" in parts:
        plot_one_shot(parts["one_shot"], bounds, results)
    if "one_shot_learn" in parts:  # the bounds were measured at the documented scale: no centralized line
        plot_one_shot(parts["one_shot_learn"], None, results, "one_shot_learn.png")
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
