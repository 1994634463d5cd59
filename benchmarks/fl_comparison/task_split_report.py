"""Tables of the task-split comparison (``task_split.json``): final pooled-test scores over seeds, paired."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmarks.fl_comparison.common import SCORE_LABEL, SCORES, TASK_METRIC
from benchmarks.fl_comparison.one_shot_report import describe_differences, mean_sd, read_differences
from benchmarks.markdown import table

LABEL = {
    "fedavg_all": "FedAvg of all tensors",
    "fedavg_task": "FedAvg, heads per task",
    "matching": "BNP matching",
}
PAIRS = (("matching", "fedavg_all"), ("matching", "fedavg_task"), ("fedavg_task", "fedavg_all"))


def _final(res: Mapping[str, Any], e: int, seed: int, aggregator: str, key: str) -> float | None:
    run = res["runs"].get(f"e{e}-s{seed}-{aggregator}")
    return None if run is None else run["final"]["pooled_test"].get(key)


def differences(res: Mapping[str, Any], e: int, first: str, second: str, key: str) -> list[float]:
    """Per-seed ``first - second`` of the final pooled-test ``key`` at ``E = e`` (seeds with both defined)."""
    pairs = ((_final(res, e, s, first, key), _final(res, e, s, second, key)) for s in res["settings"]["seeds"])
    return [float(a) - float(b) for a, b in pairs if a is not None and b is not None]


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
            [f"{LABEL[a]} − {LABEL[b]}", *(describe_differences(differences(res, e, a, b, key)) for _, key in SCORES)]
            for a, b in PAIRS
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
    withheld = res["settings"].get("withheld") or 0.0
    what = f"sites with {withheld:.0%} of annotations withheld" if withheld else "sites with different tasks"
    for e in res["settings"]["local_epochs"]:
        for second in ("fedavg_all", "fedavg_task"):
            cells = [read_differences(differences(res, e, "matching", second, key)) for key in TASK_METRIC.values()]
            rows.append([f"{what}, E = {e}, vs {LABEL[second]} ({n} seeds)", *cells])
    return rows
