"""Doc tables of federated runs: per-round overhead, where a deployed exchange's time goes, the strategy summary.

Every function takes the :class:`~benchmarks.result_files.ResultFiles` of ``docs/results`` and returns the Markdown
body of one generated block (:mod:`benchmarks.docs_tables` names them). The overhead tables read the JSON that
``benchmarks/round_overhead.py --json`` writes (one or more runs, each with a ``results`` list).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.doc_blocks import fmt, span, table
from benchmarks.fl_comparison.report import STRATEGY_LABEL
from benchmarks.result_files import ResultFiles

TARGETS = {"simulation": 1.15, "deployment": 1.5}
"""The project's targets for round wall time over the clients' critical path (``benchmarks/round_overhead.py``)."""

OVERHEAD_HEADER = (
    "workload per site and round", "setting", "measured", "client critical path", "round wall time (steady state)",
    "fixed overhead", "ratio", "MB moved per round", "target",
)  # fmt: skip

CURRENT_RUNS: tuple[tuple[str, str | None], ...] = (
    # (results file, key of the run inside it, None = the file is one run), in table order
    ("round_overhead_sim_packing.json", "packed"),
    ("round_overhead_sim_packing.json", "plain"),
    ("round_overhead.json", "runs.1"),
    ("round_overhead_sim_fused.json", None),
    ("round_overhead_packed_demo.json", None),
    ("round_overhead_plain_demo.json", None),
    ("round_overhead_packed_400x3.json", None),
    ("round_overhead_packed_demo_trace.json", None),
)
EARLIER_RUNS: tuple[tuple[str, str | None], ...] = (
    ("round_overhead.json", "runs.0"),
    ("round_overhead.json", "runs.1"),
    ("round_overhead_fused_demo.json", None),
    ("round_overhead_fused_400x3.json", None),
)
TRACE_BEFORE, TRACE_NOW = ("round_overhead.json", "runs.0"), ("round_overhead_packed_demo_trace.json", None)


def _run(files: ResultFiles, name: str, key: str | None) -> dict[str, Any]:
    """One benchmark run (``workload`` and ``results``) with the file's date, machine and note attached."""
    data = files.json(name)
    run: Any = data
    for part in (key or "").split(".") if key else ():
        run = run[int(part)] if part.isdigit() else run[part]
    return {**run, "date": run.get("date", data.get("date")), "file": name}


def _steady_rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # The benchmark's steady state: rounds >= 2, and before the last round with fused evaluation.
    rows = result["rounds"]
    return rows[1:-1] if result.get("fused_evaluation") and len(rows) > 2 else rows[1:] or rows


def _setting(run: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    packed = run.get("workload", {}).get("pack_arrays")
    parts = [result["setting"].replace(" x ", " × ")]
    if result.get("fused_evaluation"):
        parts.append("fused evaluation")
    parts.append("packed" if packed else "plain arrays")
    if "trace" in result:
        parts.append("DEBUG logs (`--trace`)")
    return ", ".join(parts)


def _overhead_rows(files: ResultFiles, runs: Sequence[tuple[str, str | None]], keep: str | None) -> list[list[str]]:
    rows = []
    for name, key in runs:
        run = _run(files, name, key)
        workload = run["workload"]
        for result in run["results"]:
            if keep and keep not in result["setting"]:
                continue
            steady = _steady_rows(result)
            ratio = f"**{result['steady_state_ratio']:.2f}×**"
            if result.get("run_ratio") is not None and result.get("fused_evaluation"):
                ratio += f" (run {result['run_ratio']:.2f}×)"
            target = TARGETS["simulation" if "simulation" in result["setting"] else "deployment"]
            rows.append(
                [
                    f"{workload['images_per_site']} images, {workload['local_epochs']} local "
                    + ("epoch" if workload["local_epochs"] == 1 else "epochs"),
                    _setting(run, result),
                    run.get("date") or "–",
                    span([r["time/client_critical_s"] for r in steady], 1) + " s",
                    span([r["time/round_s"] for r in steady], 1) + " s",
                    f"{result['steady_state_overhead_s']:.1f} s",
                    ratio,
                    f"{result['bytes_per_round'] / 1e6:.1f}",
                    f"≤ {target}×",
                ]
            )
    return rows


def overhead_table(files: ResultFiles) -> str:
    """Round wall time against the clients' critical path with today's transport (packed arrays, fast polling)."""
    rows = []
    for name, key in CURRENT_RUNS:
        keep = "simulation" if (name, key) == ("round_overhead.json", "runs.1") else None  # its simulation row only
        rows += _overhead_rows(files, [(name, key)], keep)
    return table(OVERHEAD_HEADER, rows)


def overhead_earlier_table(files: ResultFiles) -> str:
    """The deployment's overhead before packing and fast reply polling (what the fixed cost was)."""
    return table(OVERHEAD_HEADER, _overhead_rows(files, EARLIER_RUNS, "deployment"))


def trace_table(files: ResultFiles) -> str:
    """Median seconds of each phase of one message exchange at a site, before and after the transport changes."""
    before = next(r for r in _run(files, *TRACE_BEFORE)["results"] if "trace" in r)["trace"]
    now = next(r for r in _run(files, *TRACE_NOW)["results"] if "trace" in r)["trace"]
    phases = list(dict.fromkeys([*before.get("train", {}), *now.get("train", {})]))
    rows = [
        [phase, *(fmt(trace.get(kind, {}).get(phase), 1) for kind in ("train", "evaluate") for trace in (before, now))]
        for phase in phases
    ]
    return table(["phase of one exchange at a site (s)", "train, before", "train, now", "evaluate, before",
                  "evaluate, now"], rows)  # fmt: skip


def fl_final_scores(files: ResultFiles) -> dict[str, list[float]]:
    """Pooled-test mean score after the last round, per strategy, over every (alpha, local epochs) setting."""
    runs = files.json("iterative.json")["runs"]
    scores: dict[str, list[float]] = {}
    for run in runs.values():
        value = run["final"]["pooled_test"].get("mean_score")
        if value is not None:
            scores.setdefault(run["strategy"], []).append(value)
    return scores


def fl_summary_table(files: ResultFiles) -> str:
    """The federated comparison in one table: each strategy's final pooled-test mean, against the bounds."""
    iterative, bounds = files.json("iterative.json"), files.json("bounds.json")
    settings = iterative["settings"]
    rows = [
        [STRATEGY_LABEL.get(s, s), span(v, 3), fmt(statistics.median(v))] for s, v in fl_final_scores(files).items()
    ]
    rows.append(["centralized (upper bound)", fmt(bounds["centralized"]["pooled_test"]["mean_score"]), ""])
    local = [p["mean_pooled_test"]["mean_score"] for k, p in bounds["local"].items() if k.startswith("dirichlet")]
    rows.append(["local-only, mean of clients (lower bound)", span(local, 3), ""])
    header = [
        "strategy",
        f"pooled-test mean after round {settings['rounds']}, range over {len(settings['alphas'])} α × "
        f"{len(settings['local_epochs'])} E",
        "median",
    ]
    return table(header, rows)
