"""What the server does with each hostile reply of :mod:`fltesting.hostile`, for the table of ``docs/security.md``.

For every training case (paired with an evaluation case, as ``tests/security/test_hostile_site.py`` pairs
them) a tiny in-process federated run (synthetic data, 2 rounds, FedAvg) has two honest sites and a third that
sends that bad reply in every round; the same run without the third site is the reference. Recorded per case:
the reasons the server gave for the third site's replies, whether each of them contains the expected reason,
and whether the global model and every aggregated metric row equal the reference run's.

Usage (from the repository root)::

    python -m benchmarks.security_cases [--json docs/results/security_cases.json]

then ``python -m benchmarks.docs_tables`` to refresh the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from fltesting.hostile import CASE_PAIRS, HostileCase, RunOutcome, run_federated, same_model
from mtmedformer.atomic import atomic_write_text
from server.settings import ServerSettings
from tests.federated.conftest import TINY_EXPERIMENT as EXPERIMENT  # the tiny experiment of the security tests

ROOT = Path(__file__).resolve().parent.parent


def _settings(experiment: Path, out_dir: Path) -> ServerSettings:
    run_config = {"experiment": str(experiment), "output-dir": str(out_dir), "run-name": "run"}
    return ServerSettings.from_run_config(run_config)


def _row(
    case: HostileCase, phases: tuple[str, ...], sent: int, outcome: RunOutcome, reference: RunOutcome
) -> dict[str, Any]:
    """One case's row: the third site's ``sent`` replies of ``phases``, how they were rejected, what changed."""
    rows = [f for f in outcome.failures if f["failed_phase"] in phases and f["node_id"] == 3]
    reasons = [f["reason"] for f in rows]
    return {
        "case": case.name,
        "sends": case.sends,
        "expected": case.expected,
        "replies_sent": sent,
        "replies_rejected": len(reasons),
        "replies_expected": sum(f["round"] >= case.from_round for f in rows),
        "reasons_with_expected": sum(case.expected in f["reason"] for f in rows if f["round"] >= case.from_round),
        "reason": reasons[-1] if reasons else None,
        "global_model_equal": same_model(outcome.global_state, reference.global_state),
        "aggregates_equal": outcome.aggregates == reference.aggregates,
    }


def measure(workdir: Path) -> dict[str, Any]:
    """Run the reference and every case in ``workdir``; the results as a JSON-ready dict."""
    experiment = workdir / "experiment.yaml"
    data = {**EXPERIMENT, "data": {**EXPERIMENT["data"]}}
    data["data"]["synthetic"] = {**data["data"]["synthetic"], "cache_dir": str(workdir / "cache")}
    experiment.write_text(yaml.safe_dump(data))
    reference = run_federated(_settings(experiment, workdir / "reference"))
    train_rows, evaluation_rows = [], []
    for i, (train, evaluate) in enumerate(CASE_PAIRS):
        outcome = run_federated(_settings(experiment, workdir / f"case-{i}"), hostile=(train.edit, evaluate.edit))
        rounds = EXPERIMENT["federated"]["rounds"]  # one training and one validation exchange each, then the test
        train_rows.append(_row(train, ("train",), rounds, outcome, reference))
        evaluation_rows.append({**_row(evaluate, ("val", "test"), rounds + 1, outcome, reference), "with": train.name})
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {
        "what": "a third site sends one kind of bad training reply (and one kind of bad evaluation reply) in every "
        "round of a 2-round FedAvg run with two honest sites; compared with the run without the third site",
        "commit": commit,
        "rounds": EXPERIMENT["federated"]["rounds"],
        "train": train_rows,
        "evaluation": _merged(evaluation_rows),
    }


def _merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluation case over every run it was sent in: counts summed, equalities all true."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        merged = out.setdefault(row["case"], {**row, "with": [], **dict.fromkeys(_COUNTS, 0)})
        merged["with"].append(row["with"])
        for key in _COUNTS:
            merged[key] += row[key]
        for key in ("global_model_equal", "aggregates_equal"):
            merged[key] = merged[key] and row[key]
    return list(out.values())


_COUNTS = ("replies_sent", "replies_rejected", "replies_expected", "reasons_with_expected")


def main() -> None:
    """Measure every case; print a summary line per case and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "security_cases.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="security-cases-") as tmp:
        result = measure(Path(tmp))
    for row in result["train"] + result["evaluation"]:
        print(f"{row['case']:<22} rejected {row['replies_rejected']} "
              f"(expected reason in {row['reasons_with_expected']}) model equal {row['global_model_equal']} "
              f"aggregates equal {row['aggregates_equal']}")
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
