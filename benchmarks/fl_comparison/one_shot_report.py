"""Tables and the plot of the one-shot comparison (``one_shot.json``): means and spreads over seeds.

Every cell is the mean over the seeds and its sample standard deviation (``mean ± sd``; a single seed gives
the value alone). The paired table compares two models seed by seed (same data order, same site models), so
its spread is that of the differences, and it counts the seeds where the first model scored higher.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.fl_comparison.common import METRIC_LABEL, SCORE_LABEL, SCORES, TASK_METRIC
from benchmarks.markdown import table

BEST = "best site"
MERGE_LABEL = {
    "fedavg": "FedAvg of the site models",
    "matching": "matching (hard)",
    "matching_sinkhorn": "matching (soft, Sinkhorn)",
    "fedavg+1": "FedAvg + 1 round",
    "matching+1": "matching (hard) + 1 round",
    "matching_sinkhorn+1": "matching (soft) + 1 round",
}
PAIRS = (
    ("matching", "fedavg"),
    ("matching_sinkhorn", "fedavg"),
    ("matching_sinkhorn", "matching"),
    ("matching", BEST),
    ("matching_sinkhorn", BEST),
    ("matching+1", "fedavg+1"),
    ("matching_sinkhorn+1", "fedavg+1"),
    ("matching+1", BEST),
    ("fedavg+1", BEST),
)


def _seeds(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [data["seeds"][k] for k in sorted(data["seeds"], key=int)]


def _value(run: Mapping[str, Any], model: str, key: str, split: str = "pooled_test", site: str | None = None) -> Any:
    name = run["best_site"] if model == BEST else model
    scores = run["models"][name][split]
    return (scores[site] if site else scores).get(key)


def mean_sd(values: Sequence[float | None]) -> str:
    """``mean ± sd`` of the defined values (``mean`` alone for one, ``–`` for none)."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return "–"
    if len(present) == 1:
        return f"{present[0]:.3f}"
    return f"{statistics.fmean(present):.3f} ± {statistics.stdev(present):.3f}"


def _model_order(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    names = list(runs[0]["models"])
    sites = [n for n in names if n not in MERGE_LABEL]
    return [*sites, BEST, *(n for n in MERGE_LABEL if n in names)]


def _label(name: str) -> str:
    return "best site (picked on pooled val, per seed)" if name == BEST else MERGE_LABEL.get(name, name)


def describe_differences(diffs: Sequence[float]) -> str:
    """``mean ± sd (wins/seeds)`` of per-seed differences (``–`` without any)."""
    if not diffs:
        return "–"
    spread = f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""
    return f"{statistics.fmean(diffs):+.3f}{spread} ({sum(d > 0 for d in diffs)}/{len(diffs)})"


def read_differences(diffs: Sequence[float]) -> str:
    """``describe_differences`` with a plain reading: identical, higher or lower in every seed, or a tie."""
    if not diffs:
        return "–"
    if all(d == 0 for d in diffs):
        word = "identical"
    elif all(d > 0 for d in diffs):
        word = "matching higher in every seed"
    elif all(d < 0 for d in diffs):
        word = "FedAvg higher in every seed"
    else:
        word = "tie (the sign differs between seeds)"
    return f"{describe_differences(diffs)}: {word}"


def _differences(runs: Sequence[Mapping[str, Any]], first: str, second: str, key: str) -> list[float]:
    pairs = ((_value(r, first, key), _value(r, second, key)) for r in runs)
    return [float(a) - float(b) for a, b in pairs if a is not None and b is not None]


def paired(runs: Sequence[Mapping[str, Any]], first: str, second: str, key: str) -> str:
    """``mean ± sd`` of ``first - second`` over seeds and ``wins/seeds`` where ``first`` scored higher."""
    return describe_differences(_differences(runs, first, second, key))


CLAIM_PAIRS = (
    ("matching", "fedavg", "one-shot merge"),
    ("matching_sinkhorn", "fedavg", "one-shot merge, soft matching"),
    ("matching+1", "fedavg+1", "one-shot merge + 1 round"),
    ("matching_sinkhorn+1", "fedavg+1", "one-shot merge + 1 round, soft matching"),
)


def verdict(runs: Sequence[Mapping[str, Any]], first: str, second: str, key: str) -> str:
    """The paired difference with a plain reading (:func:`read_differences`)."""
    return read_differences(_differences(runs, first, second, key))


def claim_table(parts: Mapping[str, Mapping[str, Any]]) -> str:
    """Per task: does matching beat FedAvg? Paired differences of the one-shot parts (independent starts), the
    task-split part and the iterative parts."""
    # Those modules import this one (cycle): imported here.
    from benchmarks.fl_comparison.iterative_report import claim_rows as iterative_claim_rows
    from benchmarks.fl_comparison.task_split_report import claim_rows

    rows = []
    for part, scale in (("one_shot", "documented"), ("one_shot_learn", "learn")):
        data = parts.get(part, {}).get("variants", {}).get("independent")
        if not data:
            continue
        runs = _seeds(data)
        for first, second, what in CLAIM_PAIRS:
            if first in runs[0]["models"] and second in runs[0]["models"]:
                cells = [verdict(runs, first, second, key) for _, key in TASK_METRIC.items()]
                rows.append([f"{what} ({scale} scale, {len(runs)} seeds)", *cells])
    for part in ("task_split", "task_split_partial"):
        if part in parts:
            rows += claim_rows(parts[part])
    for part, scale in (("iterative", "documented"), ("iterative_learn", "learn")):
        if part in parts:
            rows += iterative_claim_rows(parts[part], scale)
    header = ["setting: matching − FedAvg", *(METRIC_LABEL[t] for t in TASK_METRIC)]
    return table(header, rows) if rows else "No one-shot or iterative results."


def one_shot_tables(res: Mapping[str, Any]) -> str:
    """Pooled-test, paired-difference, per-site and merge-cost tables of every variant."""
    blocks = []
    for variant, data in res["variants"].items():
        runs = _seeds(data)
        n = len(runs)
        order = _model_order(runs)
        header = ["model", *(SCORE_LABEL[t] for t, _ in SCORES)]
        rows = [[_label(m), *(mean_sd([_value(r, m, key) for r in runs]) for _, key in SCORES)] for m in order]
        blocks.append(
            f"**{variant} initialisation, pooled test split** (mean ± sd over {n} seeds)\n\n" + table(header, rows)
        )
        rows = [
            [f"{_label(a)} − {_label(b)}", *(paired(runs, a, b, key) for _, key in SCORES)]
            for a, b in PAIRS
            if a in order and b in order
        ]
        blocks.append(
            f"**{variant} initialisation, paired differences on the pooled test split** (mean ± sd of the "
            f"per-seed difference; in brackets: seeds where the first is higher, of {n})\n\n" + table(header, rows)
        )
        sites = list(runs[0]["models"][order[0]]["site_test"])
        site_header = ["model"] + [f"{s} {METRIC_LABEL[t]}" for s in sites for t in TASK_METRIC]
        rows = [
            [_label(m)]
            + [
                mean_sd([_value(r, m, key, "site_test", s) for r in runs])
                for s in sites
                for key in TASK_METRIC.values()
            ]
            for m in order
        ]
        blocks.append(
            f"**{variant} initialisation, each site's test split** (mean ± sd)\n\n" + table(site_header, rows)
        )
        merges = list(runs[0].get("merges", {}))
        kinds = list(runs[0]["merges"].get("matching", {}).get("moved", {})) if merges else []
        rows = []
        for name in merges:
            records = [r["merges"][name] for r in runs]
            moved = [mean_sd([rec.get("moved", {}).get(k) for rec in records]) for k in kinds]
            soft = mean_sd([rec.get("soft-offdiagonal") for rec in records])
            rows.append([_label(name), mean_sd([rec["seconds"] for rec in records]), *moved, soft])
        blocks.append(
            f"**{variant} initialisation, the merges** (server seconds on this CPU; fraction of units the hard "
            "matching moved, per kind of group; soft maps' mean off-diagonal mass)\n\n"
            + table(["merge", "seconds", *(f"moved: {k}" for k in kinds), "soft off-diagonal"], rows)
        )
    return "\n\n".join(blocks)


def plot_one_shot(
    res: Mapping[str, Any], bounds: Mapping[str, Any] | None, folder: Path, name: str = "one_shot.png"
) -> Path:
    """Bars (mean over seeds, sd as error bar) of every model's pooled-test score, a panel per (variant, task)."""
    variants = list(res["variants"])
    fig, axes = plt.subplots(
        len(variants), len(SCORES), figsize=(3.4 * len(SCORES), 3.0 * len(variants)), squeeze=False
    )
    for i, variant in enumerate(variants):
        runs = _seeds(res["variants"][variant])
        order = _model_order(runs)
        for j, (task, key) in enumerate(SCORES):
            ax = axes[i][j]
            means, sds = [], []
            for m in order:
                values = [float(v) for v in (_value(r, m, key) for r in runs) if v is not None]
                means.append(statistics.fmean(values) if values else 0.0)
                sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            colors = ["#1f77b4" if m.startswith("fedavg") else "#d62728" if m.startswith("matching") else "#999999"
                      for m in order]
            ax.bar(range(len(order)), means, yerr=sds, color=colors, capsize=2)
            ax.set_xticks(range(len(order)), order, rotation=60, fontsize=6)
            if bounds:
                ax.axhline(
                    bounds["centralized"]["pooled_test"].get(key) or 0.0, color="black", linestyle="--", linewidth=1
                )
            ax.set_title(f"{variant}: {SCORE_LABEL[task]} ({len(runs)} seeds)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = folder / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
