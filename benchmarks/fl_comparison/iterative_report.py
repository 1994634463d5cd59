"""Tables and plots of the iterative comparison (``iterative.json``, ``iterative_learn.json``) over seeds.

A *condition* is one (Dirichlet alpha, local epochs, strategy); it holds one run per seed. For FedAdam and
FedYogi only the runs at the server learning rate chosen on validation count (``tuning`` in the JSON); the
other tuning runs are listed in the tuning table only. Cells are ``mean ± sd`` over seeds; paired differences
against FedAvg are taken seed by seed (same initial weights and data order), with the seeds where the strategy
scored higher in brackets.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from benchmarks.fl_comparison.common import MOVED_KINDS, SCORE_LABEL, SCORES, TASK_METRIC, condition_key
from benchmarks.fl_comparison.one_shot_report import describe_differences, mean_sd, read_differences
from benchmarks.markdown import fmt, table

STRATEGY_LABEL = {
    "fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi",
    "fedmedian": "FedMedian", "bnp_matching": "BNP matching",
}  # fmt: skip
CENTRAL = "centralized (upper bound)"
LOCAL = "local-only, mean of clients (lower bound)"
Condition = tuple[str, int, str]  # (alpha as written by f"{alpha:g}", local epochs, strategy)


def conditions(res: Mapping[str, Any]) -> dict[Condition, list[Mapping[str, Any]]]:
    """The runs of every condition, sorted by seed (runs of a single-seed JSON count as seed 0).

    For a tuned strategy, only the runs at the chosen server learning rate are kept.
    """
    tuning = res.get("tuning", {})
    grouped: dict[Condition, list[Mapping[str, Any]]] = {}
    for run in res["runs"].values():
        key = (f"{run['alpha']:g}", int(run["local_epochs"]), run["strategy"])
        chosen = tuning.get(condition_key(*key), {}).get("chosen_server_lr")
        if chosen is not None and run.get("server_lr") is not None and float(run["server_lr"]) != float(chosen):
            continue
        grouped.setdefault(key, []).append(run)
    return {k: sorted(v, key=lambda r: r.get("seed", 0)) for k, v in grouped.items()}


def columns(res: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The (alpha, local epochs) columns of the part, in its settings' order."""
    settings = res["settings"]
    return [(f"{a:g}", int(e)) for e in settings["local_epochs"] for a in settings["alphas"]]


def _final(run: Mapping[str, Any], key: str) -> float | None:
    return run["final"]["pooled_test"].get(key)


def _seed_count(res: Mapping[str, Any]) -> int:
    return max((len(v) for v in conditions(res).values()), default=0)


def _seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def bound_rows(bounds: Mapping[str, Any] | None, alpha: str | None) -> dict[str, Mapping[str, Any]]:
    """Centralized and (for ``alpha``) local-only mean pooled-test scores, keyed by row label."""
    if not bounds:
        return {}
    rows: dict[str, Mapping[str, Any]] = {CENTRAL: bounds["centralized"]["pooled_test"]}
    if alpha is None:
        return rows
    local = next(
        (
            v
            for k, v in bounds.get("local", {}).items()
            if k.startswith("dirichlet:") and float(k.split(":")[1]) == float(alpha)
        ),
        None,
    )
    if local:
        rows[LOCAL] = local["mean_pooled_test"]
    return rows


def final_tables(res: Mapping[str, Any], bounds: Mapping[str, Any] | None) -> str:
    """Final-round pooled-test tables (mean ± sd over seeds), one per task, bounds included."""
    grouped, cols, settings = conditions(res), columns(res), res["settings"]
    blocks = []
    for task, key in SCORES:
        header = ["strategy", *(f"α={a}, E={e}" for a, e in cols)]
        rows = [
            [
                STRATEGY_LABEL.get(s, s),
                *(mean_sd([_final(r, key) for r in grouped.get((a, e, s), [])]) if (a, e, s) in grouped else "not run"
                  for a, e in cols),
            ]
            for s in settings["strategies"]
        ]  # fmt: skip
        if bounds:
            rows.append([CENTRAL, *(fmt(bounds["centralized"]["pooled_test"].get(key)) for _ in cols)])
            cells = []
            for a, _ in cols:
                local = bound_rows(bounds, a).get(LOCAL)
                cells.append(fmt(local.get(key)) if local else "not run")
            rows.append([LOCAL, *cells])
        blocks.append(
            f"**{SCORE_LABEL[task]}, pooled test split, after round {settings['rounds']}** "
            f"(mean ± sd over {_seeds_text(_seed_count(res))})\n\n" + table(header, rows)
        )
    return "\n\n".join(blocks)


def differences(
    first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]], key: str
) -> list[float]:
    """Per-seed ``first - second`` of the final pooled-test ``key`` over the seeds both conditions ran."""
    by_seed = {r.get("seed", 0): r for r in second}
    out = []
    for run in first:
        other = by_seed.get(run.get("seed", 0))
        a, b = _final(run, key), None if other is None else _final(other, key)
        if a is not None and b is not None:
            out.append(float(a) - float(b))
    return out


def paired_table(res: Mapping[str, Any]) -> str:
    """Every strategy minus FedAvg, per (alpha, local epochs), seed by seed."""
    grouped = conditions(res)
    rows = []
    for a, e in columns(res):
        fedavg = grouped.get((a, e, "fedavg"))
        if not fedavg:
            continue
        for s in res["settings"]["strategies"]:
            if s == "fedavg" or (a, e, s) not in grouped:
                continue
            cells = [describe_differences(differences(grouped[(a, e, s)], fedavg, k)) for _, k in SCORES]
            rows.append([f"{STRATEGY_LABEL.get(s, s)} − FedAvg, α = {a}, E = {e}", *cells])
    header = ["pair", *(SCORE_LABEL[t] for t, _ in SCORES)]
    return table(header, rows) if rows else "No condition has FedAvg and another strategy to compare."


def tuning_table(res: Mapping[str, Any]) -> str:
    """Final validation mean score of every server learning rate tried, and the one chosen."""
    tuning = res.get("tuning", {})
    if not tuning:
        return "No server learning rate was tuned (one value given)."
    rates = sorted({lr for t in tuning.values() for lr in t["val_mean_score"]}, key=float)
    rows = [
        [name, str(t["seed"]), *(fmt(t["val_mean_score"].get(lr)) for lr in rates), f"{t['chosen_server_lr']:g}"]
        for name, t in tuning.items()
    ]
    return table(["condition", "seed", *(f"val mean, lr {lr}" for lr in rates), "chosen"], rows)


def cost_table(res: Mapping[str, Any]) -> str:
    """Server aggregation seconds per round (mean ± sd over rounds and seeds), per condition."""
    rows = []
    for (a, e, s), runs in conditions(res).items():
        seconds = [
            r.get("aggregate_seconds") if r.get("aggregate_seconds") is not None else r.get("matching_seconds")
            for run in runs
            for r in run["rounds"]
        ]
        rows.append([f"α = {a}, E = {e}", STRATEGY_LABEL.get(s, s), mean_sd(seconds)])
    return table(["condition", "strategy", "aggregation s per round"], rows)


def moved_table(res: Mapping[str, Any]) -> str:
    """Per round of every matching condition: mean over seeds of the fraction of units moved per kind of
    group, the server seconds of the matching and its objective gain."""
    rows = []
    for (a, e, s), runs in conditions(res).items():
        if s != "bnp_matching":
            continue
        for i, entry in enumerate(runs[0]["rounds"]):
            per_seed = [run["rounds"][i] for run in runs if i < len(run["rounds"])]
            rows.append(
                [
                    f"α = {a}, E = {e}",
                    str(entry["round"]),
                    *(mean_sd([p.get("moved", {}).get(k) for p in per_seed]) for k in MOVED_KINDS),
                    mean_sd([p.get("matching_seconds") for p in per_seed]),
                    mean_sd([p.get("matching_objective_gain") for p in per_seed]),
                ]
            )
    header = ["condition", "round", *MOVED_KINDS, "matching s", "objective gain"]
    return table(header, rows) if rows else "No matching runs."


def claim_rows(res: Mapping[str, Any], scale: str) -> list[list[str]]:
    """Rows of the summary claim table: BNP matching minus FedAvg per task, per (alpha, local epochs)."""
    grouped, rows = conditions(res), []
    for a, e in columns(res):
        matched, fedavg = grouped.get((a, e, "bnp_matching")), grouped.get((a, e, "fedavg"))
        if matched and fedavg:
            n = len(differences(matched, fedavg, "mean_score"))
            cells = [read_differences(differences(matched, fedavg, key)) for key in TASK_METRIC.values()]
            rows.append([f"iterative, α = {a}, E = {e} ({scale} scale, {_seeds_text(n)})", *cells])
    return rows


def iterative_tables(res: Mapping[str, Any], bounds: Mapping[str, Any] | None) -> str:
    """The final, paired, tuning and server-cost tables of one iterative part."""
    return "\n\n".join(
        [
            final_tables(res, bounds),
            "**Each strategy minus FedAvg, pooled test split, after the last round** (mean ± sd of the per-seed "
            "difference; in brackets: seeds where the strategy is higher)\n\n" + paired_table(res),
            "**Server learning rate of FedAdam / FedYogi, chosen on the pooled validation split**\n\n"
            + tuning_table(res),
            "**Server aggregation time**\n\n" + cost_table(res),
        ]
    )


def _bound_lines(ax: Any, bounds: Mapping[str, Any] | None, alpha: str, key: str) -> None:
    for label, scores in bound_rows(bounds, alpha).items():
        value = scores.get(key)
        if value is not None:
            style = "--" if label == CENTRAL else ":"
            ax.axhline(value, color="black", linestyle=style, linewidth=1, label=label.split(" (")[0])


def plot_iterative(res: Mapping[str, Any], bounds: Mapping[str, Any] | None, folder: Path, stem: str) -> list[Path]:
    """One figure per task (``<stem>_<task>.png``): rows = local epochs, columns = alpha, a line per strategy
    (mean over seeds, the band one sd)."""
    settings, grouped = res["settings"], conditions(res)
    alphas, epochs = [f"{a:g}" for a in settings["alphas"]], [int(e) for e in settings["local_epochs"]]
    paths = []
    for task, key in SCORES:
        fig, axes = plt.subplots(
            len(epochs), len(alphas), figsize=(4 * len(alphas), 3 * len(epochs)), squeeze=False, sharey=True
        )
        for i, e in enumerate(epochs):
            for j, a in enumerate(alphas):
                ax = axes[i][j]
                for strategy in settings["strategies"]:
                    _plot_condition(ax, grouped.get((a, e, strategy), []), key, STRATEGY_LABEL.get(strategy, strategy))
                _bound_lines(ax, bounds, a, key)
                ax.set_title(f"α = {a}, E = {e}", fontsize=9)
                ax.set_xlabel("round", fontsize=8)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.grid(alpha=0.3)
                if j == 0:
                    ax.set_ylabel(f"pooled test {SCORE_LABEL[task]}", fontsize=8)
        handles, labels = axes[0][0].get_legend_handles_labels()
        ncol = max(1, min(len(labels), 2 * len(alphas)))
        legend_rows = -(-len(labels) // ncol)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
        fig.tight_layout(rect=(0, 0.05 * legend_rows / len(epochs) + 0.02, 1, 1))
        path = folder / f"{stem}_{task}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def _by_round(runs: Sequence[Mapping[str, Any]], value_of: Any) -> dict[int, list[float]]:
    """``{round: [value of every run that has one]}``, with ``value_of(round entry)`` (None = no value)."""
    by_round: dict[int, list[float]] = {}
    for run in runs:
        for entry in run["rounds"]:
            value = value_of(entry)
            if value is not None:
                by_round.setdefault(int(entry["round"]), []).append(float(value))
    return by_round


def _plot_condition(ax: Any, runs: Sequence[Mapping[str, Any]], key: str, label: str) -> None:
    """Mean over seeds per round, with a ± sd band where there is more than one seed."""
    by_round = _by_round(runs, lambda entry: entry["pooled_test"].get(key))
    if not by_round:
        return
    xs = sorted(by_round)
    means = [statistics.fmean(by_round[x]) for x in xs]
    sds = [statistics.stdev(by_round[x]) if len(by_round[x]) > 1 else 0.0 for x in xs]
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=label)
    if any(sds):
        lows = [m - s for m, s in zip(means, sds, strict=True)]
        highs = [m + s for m, s in zip(means, sds, strict=True)]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)


def plot_moved(res: Mapping[str, Any], folder: Path, name: str) -> Path | None:
    """Residual-stream and MLP moved fractions per round of every matching condition (mean over seeds)."""
    grouped = {k: v for k, v in conditions(res).items() if k[2] == "bnp_matching"}
    if not grouped:
        return None
    kinds = ("residual", "MLP hidden")
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for (a, e, _), runs in grouped.items():
            by_round = _by_round(runs, lambda entry, kind=kind: entry.get("moved", {}).get(kind))
            if by_round:
                xs = sorted(by_round)
                ax.plot(xs, [statistics.fmean(by_round[x]) for x in xs], marker="o", markersize=3,
                        label=f"α = {a}, E = {e}")  # fmt: skip
        ax.set_title(f"units moved by matching: {kind}", fontsize=9)
        ax.set_xlabel("round", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mean fraction over clients and seeds", fontsize=8)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = folder / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
