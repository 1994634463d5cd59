"""Tables of the task-split comparison (``task_split.json``): final pooled-test scores over seeds, paired."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from benchmarks.fl_comparison.common import METRIC_LABEL, TASK_METRIC
from benchmarks.fl_comparison.one_shot_report import mean_sd
from benchmarks.markdown import table

SCORES = (*TASK_METRIC.items(), ("mean", "mean_score"))
SCORE_LABEL = {**METRIC_LABEL, "mean": "mean"}
LABEL = {
    "fedavg_all": "FedAvg of all tensors",
    "fedavg_task": "FedAvg, heads per task",
    "matching": "BNP matching",
}
PAIRS = (("matching", "fedavg_all"), ("matching", "fedavg_task"), ("fedavg_task", "fedavg_all"))


def _final(res: Mapping[str, Any], e: int, seed: int, aggregator: str, key: str) -> float | None:
    run = res["runs"].get(f"e{e}-s{seed}-{aggregator}")
    return None if run is None else run["final"]["pooled_test"].get(key)


def paired_cell(res: Mapping[str, Any], e: int, first: str, second: str, key: str) -> tuple[str, list[float]]:
    """``mean ± sd (wins/seeds)`` of ``first - second`` at ``E = e``, and the differences."""
    diffs = []
    for seed in res["settings"]["seeds"]:
        a, b = _final(res, e, seed, first, key), _final(res, e, seed, second, key)
        if a is not None and b is not None:
            diffs.append(float(a) - float(b))
    if not diffs:
        return "–", diffs
    spread = f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""
    return f"{statistics.fmean(diffs):+.3f}{spread} ({sum(d > 0 for d in diffs)}/{len(diffs)})", diffs


def task_split_tables(res: Mapping[str, Any]) -> str:
    """Per E: the final global model of every aggregator, the paired differences, and the server seconds."""
    settings = res["settings"]
    seeds = settings["seeds"]
    header = ["aggregator", *(SCORE_LABEL[t] for t, _ in SCORES)]
    blocks = []
    for e in settings["local_epochs"]:
        rows = [
            [LABEL.get(a, a), *(mean_sd([_final(res, e, s, a, key) for s in seeds]) for _, key in SCORES)]
            for a in settings["aggregators"]
        ]
        blocks.append(
            f"**E = {e}, pooled test split after round {settings['rounds']}** (mean ± sd over {len(seeds)} seeds)\n\n"
            + table(header, rows)
        )
        rows = [
            [f"{LABEL[a]} − {LABEL[b]}", *(paired_cell(res, e, a, b, key)[0] for _, key in SCORES)] for a, b in PAIRS
        ]
        blocks.append(
            f"**E = {e}, paired differences** (per seed; in brackets: seeds where the first is higher)\n\n"
            + table(header, rows)
        )
    rows = []
    for a in settings["aggregators"]:
        seconds = [r["seconds"] for run in res["runs"].values() if run["aggregator"] == a for r in run["rounds"]]
        moved = [
            r.get("moved", {}).get("residual") for run in res["runs"].values() if run["aggregator"] == a
            for r in run["rounds"]
        ]
        rows.append([LABEL.get(a, a), mean_sd(seconds), mean_sd(moved)])
    blocks.append(
        "**Server seconds per aggregation and residual units moved** (mean ± sd over every round of every run)\n\n"
        + table(["aggregator", "seconds per round", "residual moved"], rows)
    )
    return "\n\n".join(blocks)


def claim_rows(res: Mapping[str, Any]) -> list[list[str]]:
    """Rows for the summary's claim table: matching − each FedAvg, per task, at every E."""
    rows = []
    n = len(res["settings"]["seeds"])
    for e in res["settings"]["local_epochs"]:
        for second in ("fedavg_all", "fedavg_task"):
            cells = []
            for _, key in TASK_METRIC.items():
                text, diffs = paired_cell(res, e, "matching", second, key)
                if diffs and all(d == 0 for d in diffs):
                    text += ": identical"
                elif diffs and all(d > 0 for d in diffs):
                    text += ": matching higher in every seed"
                elif diffs and all(d < 0 for d in diffs):
                    text += ": FedAvg higher in every seed"
                elif diffs:
                    text += ": tie"
                cells.append(text)
            rows.append([f"sites with different tasks, E = {e}, vs {LABEL[second]} ({n} seeds)", *cells])
    return rows
