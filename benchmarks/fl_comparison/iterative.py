"""Iterative federated learning under label skew: FedAvg, FedProx, FedAdam, FedYogi, FedMedian and BNP matching.

The pooled synthetic mammography set (3 sites) is re-partitioned into J = 3 clients by Dirichlet label skew (Hsu
et al. 2019) for every ``alpha`` in ``--alphas`` (0.1: each client holds mostly one label; 100: close to IID;
default 0.1 and 0.5), and every strategy runs ``--rounds`` rounds with ``--epochs`` local epochs (capped at
``--local-steps`` optimisation steps per round; 0 = no cap) for every seed in ``--seeds`` (the seed sets the
shared initial weights and the clients' data order; the partition stays the same). Each run is a real federated
run of the project's ServerApp round loop and ClientApp, in process (:class:`fltesting.inprocess.InProcessGrid`:
sequential clients, deterministic, no Ray), with ``federated.server_evaluation`` on, so the global model of
every round is scored on the pooled test split.

FedAdam and FedYogi take their server learning rate from ``--server-lrs``: with more than one value, every
value is run with the first seed and the one with the best final validation ``mean_score`` (pooled validation
split, never the test split) is used for the other seeds; the choice is recorded per (alpha, local epochs).

Runs land in ``<out>/<part>/<run>/`` (rounds.jsonl, sites.jsonl, checkpoints, report.md; the part is
``iterative``, or ``iterative_learn`` at ``--scale learn``); a run that is already complete is reused and an
interrupted one is resumed, so the script can be re-run after a cut.

Usage::

    python -m benchmarks.fl_comparison.iterative [--quick] [--out runs/fl-comparison] [--alphas 0.1 0.5]
        [--epochs 1] [--strategies fedavg fedprox fedadam fedyogi fedmedian bnp_matching] [--rounds 5]
        [--local-steps 8] [--seeds 0 1 2] [--server-lrs 0.001 0.01 0.1] [--scale documented|learn]
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.fl_comparison.common import (
    NUM_SITES,
    CostModel,
    base_experiment,
    begin_part,
    build_config,
    common_parser,
    condition_key,
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

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "bnp_matching")
ADAPTIVE = ("fedadam", "fedyogi")  # server optimizers whose learning rate is tuned on validation
SETTINGS = {  # key in iterative.json -> command-line attribute
    "alphas": "alphas", "local_epochs": "epochs", "strategies": "strategies", "rounds": "rounds",
    "local_steps": "local_steps", "proximal_mu": "proximal_mu", "server_lrs": "server_lrs", "seeds": "seeds",
    "quick": "quick", "scale": "scale",
}  # fmt: skip
TIMING_FILE = "benchmark_seconds.json"  # per run: wall seconds spent in this script (summed over resumes)


def run_name(alpha: float, epochs: int, strategy: str, seed: int = 0, server_lr: float | None = None) -> str:
    """Folder name of one run, e.g. ``a0.1-e5-fedavg``, ``a0.1-e5-fedavg-s1``, ``a0.1-e5-fedadam-lr0.01-s2``.

    Seed 0 carries no suffix (the names of the first, single-seed measurement); ``server_lr`` is named for the
    adaptive strategies only.
    """
    lr = f"-lr{server_lr:g}" if strategy in ADAPTIVE and server_lr is not None else ""
    return condition_key(alpha, epochs, strategy) + lr + (f"-s{seed}" if seed else "")


def part_name(scale: str) -> str:
    """The part's name (results JSON stem and run folder): ``iterative``, or ``iterative_<scale>``."""
    return "iterative" if scale == "documented" else f"iterative_{scale}"


def federated_section(
    args: Any, alpha: float, epochs: int, strategy: str, out: Path, server_lr: float | None = None
) -> dict[str, Any]:
    """The ``federated`` config section of one run (``server_lr``: FedAdam / FedYogi step, else the first)."""
    return {
        "rounds": args.rounds,
        "strategy": strategy,
        "local_epochs": epochs,
        "local_steps": args.local_steps,
        "min_train_nodes": NUM_SITES,
        "min_evaluate_nodes": NUM_SITES,
        "min_available_nodes": NUM_SITES,
        "client_threads": args.threads,  # clients run one after another: each gets the scale's threads
        "server_evaluation": True,
        "output_dir": str(out / part_name(args.scale)),
        "strategy_options": {
            "proximal_mu": args.proximal_mu,
            "server_lr": args.server_lrs[0] if server_lr is None else server_lr,
        },
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
            "aggregate_seconds": row.get("time/aggregate_s"),  # the server's strategy step (absent before it was)
        }
        moved = _prefixed(row, "train/matching/moved/")
        if moved:
            entry["moved"] = moved_by_kind(moved)
            entry["matching_seconds"] = row.get("train/matching/seconds")
            entry["matching_objective_gain"] = row.get("train/matching/objective-gain")
        rounds.append(entry)
    site_test = {
        row["site"]: headline(row) for row in _read_jsonl(run_dir / "sites.jsonl") if row.get("phase") == "test"
    }
    return {
        "rounds": rounds,
        "final": {"pooled_test": rounds[-1]["pooled_test"] if rounds else {}, "site_test": site_test},
    }


def run_one(cfg_dict: dict[str, Any], folder: Path, name: str) -> dict[str, Any]:
    """Run (or resume, or reuse) one federated run in ``folder / name`` and return its collected results."""
    configs = folder / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    experiment = configs / f"{name}.yaml"
    experiment.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    run_dir = folder / name
    resume = (run_dir / "server_state.pt").exists()
    settings = ServerSettings.from_run_config(
        {
            "experiment": str(experiment.resolve()),
            "output-dir": str(folder),
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
    """Estimated wall time of every run (training, per-round validation and pooled test, final site tests),
    the server-learning-rate tuning runs included."""
    batch = args.batch_size
    runs_per_condition = len(args.seeds) * len(args.strategies) + sum(
        len(args.server_lrs) - 1 for s in args.strategies if s in ADAPTIVE and len(args.server_lrs) > 1
    )
    total = 0.0
    for alpha, summary in partitions.items():
        train_sizes = [p["splits"]["train"] for p in summary]
        val = sum(p["splits"]["val"] for p in summary)
        test = sum(p["splits"]["test"] for p in summary)
        for epochs in args.epochs:
            per_round = train_images_per_round(train_sizes, batch, epochs, args.local_steps)
            total += runs_per_condition * cost.seconds(
                args.rounds * per_round, args.rounds * (val + pooled_test) + test
            )
        log.info("alpha %g: client train sizes %s", alpha, train_sizes)
    return total


def final_val_score(result: Mapping[str, Any]) -> float:
    """Final-round pooled validation ``mean_score`` of a collected run (-inf where undefined)."""
    rounds = result.get("rounds") or [{}]
    value = rounds[-1].get("val", {}).get("mean_score")
    return float("-inf") if value is None else float(value)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every (alpha, local epochs, strategy, seed) combination and write ``<out>/<part>.json``."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--alphas", type=float, nargs="+", default=None, help="Dirichlet alphas (default 0.1 0.5)")
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=None,
        help="local epochs per round (default 1: with the default step cap more epochs add few steps)",
    )  # fmt: skip
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run (default 5; quick 1)")
    parser.add_argument(
        "--local-steps", type=int, default=None, help="cap on local steps per round, 0 = none (default 8)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2; quick 0)")
    parser.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx mu (default 0.01)")
    parser.add_argument(
        "--server-lrs",
        type=float,
        nargs="+",
        default=None,
        help="FedAdam / FedYogi server steps to tune over on validation (default 0.001 0.01 0.1; quick 0.01)",
    )
    args = parser.parse_args(argv)
    out = start(args)
    args.alphas = args.alphas or ([100.0] if args.quick else [0.1, 0.5])
    args.epochs = args.epochs or [1]
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.server_lrs = args.server_lrs or ([0.01] if args.quick else [0.001, 0.01, 0.1])
    if args.local_steps is None:
        args.local_steps = 2 if args.quick else 8
    args.local_steps = args.local_steps or None  # 0: no cap
    part = part_name(args.scale)
    folder = out / part
    base = base_experiment(args.quick, args.cache_dir, args.scale)
    args.batch_size = base["train"]["batch_size"]
    args.threads = base["train"]["threads"]
    torch.set_num_threads(args.threads)  # the server's pooled evaluation runs in this process too

    configs = {a: build_config(base, federated=federated_section(args, a, 1, "fedavg", out)) for a in args.alphas}
    partitions = {a: partition_summary(cfg) for a, cfg in configs.items()}
    first = configs[args.alphas[0]]
    pooled = pooled_splits(first)
    cost = measure_cost(first, pooled["train"])
    conditions = [(a, e, s) for a in args.alphas for e in args.epochs for s in args.strategies]
    estimate = plan_seconds(cost, args, partitions, len(pooled.get("test", ())))
    cap = f"local steps <= {args.local_steps}" if args.local_steps else "no local step cap"
    detail = (
        f"{len(conditions)} conditions x {len(args.seeds)} seeds x {args.rounds} rounds, {cap}, "
        f"{cost.train_s_per_image * 1000:.0f} ms per training image; matching time not included"
    )
    settings = settings_of(args, SETTINGS) | {"base_config": base}
    run = begin_part(
        part,
        args,
        out,
        (estimate, detail),
        settings,
        partitions={f"{a:g}": p for a, p in partitions.items()},
        pooled={k: len(v) for k, v in pooled.items()},
        runs={},
        tuning={},
    )
    if run is None:
        return {"estimate_s": estimate}

    def measure(alpha: float, epochs: int, strategy: str, seed: int, lr: float | None) -> dict[str, Any]:
        name = run_name(alpha, epochs, strategy, seed, lr)
        if name not in run.results["runs"]:
            log.info("%s: run %s (%d done)", part, name, len(run.results["runs"]))
            section = federated_section(args, alpha, epochs, strategy, out, lr)
            cfg_dict = deep_merge(base, {"federated": section, "train": {"seed": seed}})
            run.results["runs"][name] = {
                "alpha": alpha,
                "local_epochs": epochs,
                "strategy": strategy,
                "seed": seed,
                "server_lr": section["strategy_options"]["server_lr"] if strategy in ADAPTIVE else None,
                **run_one(cfg_dict, folder, name),
            }
            run.save()
        return run.results["runs"][name]

    for alpha, epochs, strategy in conditions:
        lr = args.server_lrs[0] if strategy in ADAPTIVE else None
        if strategy in ADAPTIVE and len(args.server_lrs) > 1:
            scores = {
                f"{x:g}": final_val_score(measure(alpha, epochs, strategy, args.seeds[0], x)) for x in args.server_lrs
            }
            lr = float(max(scores, key=scores.get))
            run.results["tuning"][condition_key(alpha, epochs, strategy)] = {
                "seed": args.seeds[0], "val_mean_score": scores, "chosen_server_lr": lr,
            }  # fmt: skip
            run.save()
        for seed in args.seeds:
            measure(alpha, epochs, strategy, seed, lr)
    return run.finish()


if __name__ == "__main__":
    main()
