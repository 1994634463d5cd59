"""Iterative federated learning under label skew: FedAvg, FedProx, FedAdam and BNP matching, round by round.

The pooled synthetic mammography set (3 sites) is re-partitioned into J = 3 clients by Dirichlet label skew
(Hsu et al. 2019) for every ``alpha`` in ``--alphas`` (0.1: each client holds mostly one label; 100: close to
IID), and every strategy runs ``--rounds`` rounds with ``--epochs`` local epochs (capped at ``--local-steps``
optimisation steps per round). Each run is a real federated run of the project's ServerApp round loop and
ClientApp, in process (:class:`fltesting.inprocess.InProcessGrid`: sequential clients, deterministic, no Ray),
with ``federated.server_evaluation`` on, so the global model of every round is scored on the pooled test split.

Runs land in ``<out>/iterative/<run>/`` (rounds.jsonl, sites.jsonl, checkpoints, report.md); a run that is
already complete is reused and an interrupted one is resumed, so the script can be re-run after a cut.

Usage::

    python -m benchmarks.fl_comparison.iterative [--quick] [--out runs/fl-comparison] [--alphas 0.1 0.5 100]
        [--epochs 1 5] [--strategies fedavg fedprox fedadam bnp_matching] [--rounds 5] [--local-steps 8]
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.fl_comparison.common import (
    NUM_SITES,
    CostModel,
    base_experiment,
    begin_part,
    build_config,
    common_parser,
    headline,
    log,
    machine_info,
    measure_cost,
    moved_by_kind,
    pooled_splits,
    settings_of,
    site_splits,
    start,
    train_images_per_round,
)
from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from mtmedformer.config import ExperimentConfig
from mtmedformer.config.loader import deep_merge
from mtmedformer.data.partition import describe_partitions, partition_records
from mtmedformer.data.sources import load_records
from server.app import run_experiment
from server.settings import ServerSettings

STRATEGIES = ("fedavg", "fedprox", "fedadam", "bnp_matching")
SETTINGS = {  # key in iterative.json -> command-line attribute
    "alphas": "alphas", "local_epochs": "epochs", "strategies": "strategies", "rounds": "rounds",
    "local_steps": "local_steps", "proximal_mu": "proximal_mu", "server_lr": "server_lr", "quick": "quick",
}  # fmt: skip
TIMING_FILE = "benchmark_seconds.json"  # per run: wall seconds spent in this script (summed over resumes)


def run_name(alpha: float, epochs: int, strategy: str) -> str:
    """Folder name of one run, e.g. ``a0.1-e5-fedavg``."""
    return f"a{alpha:g}-e{epochs}-{strategy}"


def federated_section(args: Any, alpha: float, epochs: int, strategy: str, out: Path) -> dict[str, Any]:
    """The ``federated`` config section of one run."""
    return {
        "rounds": args.rounds,
        "strategy": strategy,
        "local_epochs": epochs,
        "local_steps": args.local_steps,
        "min_train_nodes": NUM_SITES,
        "min_evaluate_nodes": NUM_SITES,
        "min_available_nodes": NUM_SITES,
        "client_threads": 1,
        "server_evaluation": True,
        "output_dir": str(out / "iterative"),
        "strategy_options": {"proximal_mu": args.proximal_mu, "server_lr": args.server_lr},
        "partition": {"scheme": "dirichlet", "alpha": alpha, "seed": 0},
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _prefixed(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}


def collect_run(run_dir: Path) -> dict[str, Any]:
    """Per-round pooled-test and validation metrics, matching diagnostics and final per-site test metrics."""
    rounds = []
    for row in _read_jsonl(run_dir / "rounds.jsonl"):
        entry = {
            "round": row["round"],
            "pooled_test": headline(_prefixed(row, "server/")),
            "val": headline(_prefixed(row, "val/")),
            "train_loss": row.get("train/loss"),
            "failures": row.get("failures", 0),
        }
        moved = _prefixed(row, "train/matching/moved/")
        if moved:
            entry["moved"] = moved_by_kind(moved)
            entry["matching_seconds"] = row.get("train/matching/seconds")
        rounds.append(entry)
    site_test = {
        row["site"]: headline(row) for row in _read_jsonl(run_dir / "sites.jsonl") if row.get("phase") == "test"
    }
    return {
        "rounds": rounds,
        "final": {"pooled_test": rounds[-1]["pooled_test"] if rounds else {}, "site_test": site_test},
    }


def run_one(cfg_dict: dict[str, Any], out: Path, name: str) -> dict[str, Any]:
    """Run (or resume, or reuse) one federated run and return its collected results."""
    configs = out / "iterative" / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    experiment = configs / f"{name}.yaml"
    experiment.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    run_dir = out / "iterative" / name
    resume = (run_dir / "server_state.pt").exists()
    settings = ServerSettings.from_run_config(
        {
            "experiment": str(experiment.resolve()),
            "output-dir": str(out / "iterative"),
            "run-name": name,
            "resume": resume,
        }
    )
    timing = run_dir / TIMING_FILE
    record = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0}
    record.setdefault("machine", None if resume else machine_info())  # conditions when the run first started
    nodes = [{"partition-id": i, "num-partitions": NUM_SITES} for i in range(NUM_SITES)]
    began = time.monotonic()
    run_experiment(InProcessGrid(client_app, nodes), settings)
    record["seconds"] += time.monotonic() - began
    timing.write_text(json.dumps(record))
    return {"seconds": record["seconds"], "resumed": resume, "started": record["machine"], **collect_run(run_dir)}


def partition_summary(cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Records, labels and split sizes of every client of ``cfg``'s partition (for the report)."""
    part = cfg.federated.partition
    parts = partition_records(load_records(cfg.data), NUM_SITES, part.scheme, alpha=part.alpha, seed=part.seed)
    summary = describe_partitions(parts)
    for entry, site in zip(summary, site_splits(cfg), strict=True):
        entry["splits"] = {k: len(getattr(site, k) or ()) for k in ("train", "val", "test")}
    return summary


def plan_seconds(cost: CostModel, args: Any, partitions: Mapping[float, list[dict]], pooled_test: int) -> float:
    """Estimated wall time of every run (training, per-round validation and pooled test, final site tests)."""
    batch = args.batch_size
    total = 0.0
    for alpha, summary in partitions.items():
        train_sizes = [p["splits"]["train"] for p in summary]
        val = sum(p["splits"]["val"] for p in summary)
        test = sum(p["splits"]["test"] for p in summary)
        for epochs in args.epochs:
            per_round = train_images_per_round(train_sizes, batch, epochs, args.local_steps)
            total += len(args.strategies) * cost.seconds(
                args.rounds * per_round, args.rounds * (val + pooled_test) + test
            )
        log.info("alpha %g: client train sizes %s", alpha, train_sizes)
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every (alpha, local epochs, strategy) combination and write ``<out>/iterative.json``."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help="Dirichlet alphas (default 0.1 0.5 100)")
    parser.add_argument("--epochs", type=int, nargs="+", default=None, help="local epochs per round (default 1 5)")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run (default 5; quick 1)")
    parser.add_argument("--local-steps", type=int, default=None, help="cap on local steps per round (default 8)")
    parser.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx mu (default 0.01)")
    parser.add_argument("--server-lr", type=float, default=0.01, help="FedAdam server step eta (default 0.01)")
    args = parser.parse_args(argv)
    out = start(args)
    args.alphas = args.alphas or ([100.0] if args.quick else [0.1, 0.5, 100.0])
    args.epochs = args.epochs or ([1] if args.quick else [1, 5])
    args.rounds = args.rounds or (1 if args.quick else 5)
    if args.local_steps is None:
        args.local_steps = 2 if args.quick else 8
    base = base_experiment(args.quick, args.cache_dir, args.scale)
    args.batch_size = base["train"]["batch_size"]

    configs = {a: build_config(base, federated=federated_section(args, a, 1, "fedavg", out)) for a in args.alphas}
    partitions = {a: partition_summary(cfg) for a, cfg in configs.items()}
    first = configs[args.alphas[0]]
    pooled = pooled_splits(first)
    cost = measure_cost(first, pooled["train"])
    runs = [(a, e, s) for a in args.alphas for e in args.epochs for s in args.strategies]
    estimate = plan_seconds(cost, args, partitions, len(pooled.get("test", ())))
    detail = (
        f"{len(runs)} runs x {args.rounds} rounds, local steps <= {args.local_steps}, "
        f"{cost.train_s_per_image * 1000:.0f} ms per training image; matching time not included"
    )
    settings = settings_of(args, SETTINGS) | {"base_config": base}
    run = begin_part(
        "iterative",
        args,
        out,
        (estimate, detail),
        settings,
        partitions={f"{a:g}": p for a, p in partitions.items()},
        pooled={k: len(v) for k, v in pooled.items()},
        runs={},
    )
    if run is None:
        return {"estimate_s": estimate}
    for alpha, epochs, strategy in runs:
        name = run_name(alpha, epochs, strategy)
        log.info("iterative: run %s (%d of %d)", name, len(run.results["runs"]) + 1, len(runs))
        cfg_dict = deep_merge(base, {"federated": federated_section(args, alpha, epochs, strategy, out)})
        run.results["runs"][name] = {
            "alpha": alpha,
            "local_epochs": epochs,
            "strategy": strategy,
            **run_one(cfg_dict, out, name),
        }
        run.save()
    return run.finish()


if __name__ == "__main__":
    main()
