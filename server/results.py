"""Result files of a federated run, rebuilt from the full history after every round (atomically).

- ``rounds.jsonl`` / ``rounds.csv``: one row per round, aggregated over sites (``train/…``, ``val/…``,
  ``server/…`` metrics, failures, timings);
- ``sites.jsonl`` / ``sites.csv``: one row per (round, phase, site);
- ``failures.jsonl``: every rejected or failed client reply with its reason.

Rewriting the whole files from the checkpointed history (instead of appending) means a run killed between
two writes and resumed never has lost or repeated rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mtmedformer.atomic import atomic_write_text
from mtmedformer.engine.history import MetricHistory

AGGREGATE = "aggregate"


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(MetricHistory([r]).rows[0], allow_nan=False, default=str) + "\n" for r in rows)


def _clean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    history = MetricHistory()
    for row in rows:
        history.append(row)
    return history.rows


def round_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per round: aggregate metrics prefixed by phase, plus the round's failure count."""
    by_round: dict[int, dict[str, Any]] = {}
    for row in history:
        r = int(row["round"])
        merged = by_round.setdefault(r, {"round": r, "failures": 0})
        if row["phase"] == "failure":
            merged["failures"] += 1
        elif row["phase"] == "round":
            merged.update({k: v for k, v in row.items() if k not in ("phase", "site", "round")})
        elif row.get("site") == AGGREGATE:
            merged.update({f"{row['phase']}/{k}": v for k, v in row.items() if k not in ("phase", "site", "round")})
    return [by_round[r] for r in sorted(by_round)]


def write_results(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the result files of ``history`` into ``run_dir``."""
    rounds = _clean_rows(round_rows(history))
    sites = _clean_rows([r for r in history if r["phase"] not in ("failure", "round") and r.get("site") != AGGREGATE])
    failures = [r for r in history if r["phase"] == "failure"]
    atomic_write_text(run_dir / "rounds.jsonl", _jsonl(rounds))
    atomic_write_text(run_dir / "rounds.csv", MetricHistory(rounds).to_csv())
    atomic_write_text(run_dir / "sites.jsonl", _jsonl(sites))
    atomic_write_text(run_dir / "sites.csv", MetricHistory(sites).to_csv())
    atomic_write_text(run_dir / "failures.jsonl", _jsonl(failures))
