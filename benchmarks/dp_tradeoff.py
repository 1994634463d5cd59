"""Client-side DP trade-off: quality of a federated run and the privacy budget epsilon, per noise multiplier.

Every variant is a real federated run of the project's ServerApp round loop and ClientApp, in process
(:class:`fltesting.inprocess.InProcessGrid`, as ``benchmarks/fl_comparison/iterative.py``), at the federated
comparison's scale (:func:`benchmarks.fl_comparison.common.base_experiment`: 3 synthetic mammography sites
partitioned by site, ViT tiny), with ``federated.server_evaluation`` on so that the final global model is
scored on the pooled test split. The variants differ only in ``federated.privacy.dp``: none (no clipping, no
noise), then ``--clip-norm`` with each noise multiplier of ``--noise`` (0 = clipping only). The tamper hook of
the grid only observes: it records the L2 norm of every update a site sent (reply - global, float tensors), which
is the raw update norm without DP and mostly noise with it.

Usage::

    python -m benchmarks.dp_tradeoff [--quick] [--out runs/dp-tradeoff] [--strategy bnp_matching]
        [--noise 0 0.001 0.01 0.1 0.5 1 2] [--clip-norm 1.0] [--rounds 5] [--epochs 5] [--local-steps 8]
        [--json docs/results/dp_tradeoff.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from flwr.app import Message

from benchmarks.fl_comparison.common import NUM_SITES, base_experiment, build_config, json_safe, machine_info
from benchmarks.fl_comparison.iterative import collect_run
from client.app import app as client_app
from fltesting.inprocess import InProcessGrid
from mtmedformer.atomic import atomic_write_text
from mtmedformer.config import to_dict
from mtmedformer.logs import setup_logging
from server.app import run_experiment
from server.privacy import EPSILON
from server.settings import ServerSettings
from strategies import keys
from strategies.packing import decode_arrays

NO_DP = "none"  # variant name of the run without federated.privacy.dp


def federated_section(args: argparse.Namespace, noise: float | None) -> dict[str, Any]:
    """The ``federated`` section of one variant (``noise`` None: no DP)."""
    section: dict[str, Any] = {
        "rounds": args.rounds,
        "strategy": args.strategy,
        "local_epochs": args.epochs,
        "local_steps": args.local_steps,
        "min_train_nodes": NUM_SITES,
        "min_evaluate_nodes": NUM_SITES,
        "min_available_nodes": NUM_SITES,
        "client_threads": 1,
        "server_evaluation": True,
        "partition": {"scheme": "site"},
    }
    if noise is not None:
        section["privacy"] = {"dp": {"clip_norm": args.clip_norm, "noise_multiplier": noise, "delta": args.delta}}
    return section


class NormRecorder:
    """Tamper hook of the grid that changes nothing: it records the L2 norm of every training update sent."""

    def __init__(self) -> None:
        self.grid: InProcessGrid | None = None
        self.norms: list[float] = []

    def __call__(self, node: int, reply: Message) -> Message:
        if self.grid is not None and not reply.has_error() and keys.ARRAYS in reply.content:
            sent = decode_arrays(self.grid.sent[-1].content)
            received = decode_arrays(reply.content)
            squares = sum(
                float(np.square(received[k].astype(np.float64) - sent[k]).sum())
                for k in sent
                if np.issubdtype(sent[k].dtype, np.floating)
            )
            self.norms.append(squares**0.5)
        return reply


def run_variant(args: argparse.Namespace, name: str, noise: float | None) -> dict[str, Any]:
    """Run one variant from scratch (an earlier run folder of the same name is replaced)."""
    cfg = build_config(base_experiment(args.quick, args.cache_dir), federated=federated_section(args, noise))
    out = args.out / "runs"
    out.mkdir(parents=True, exist_ok=True)
    experiment = out / f"{name}.yaml"
    experiment.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = ServerSettings.from_run_config(
        {"experiment": str(experiment.resolve()), "output-dir": str(out), "run-name": name}
    )
    recorder = NormRecorder()
    nodes = [{"partition-id": i, "num-partitions": NUM_SITES} for i in range(NUM_SITES)]
    grid = InProcessGrid(client_app, nodes, tamper=recorder)
    recorder.grid = grid
    began = time.monotonic()
    run_experiment(grid, settings)
    seconds = time.monotonic() - began
    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    collected = collect_run(run_dir)
    return {
        "noise_multiplier": noise,
        "clip_norm": None if noise is None else args.clip_norm,
        "epsilon": rounds[-1].get(EPSILON) if noise is not None else None,
        "epsilon_by_round": [r.get(EPSILON) for r in rounds] if noise is not None else None,
        "sent_update_norm_median": statistics.median(recorder.norms) if recorder.norms else None,
        "final": collected["final"],
        "rounds": collected["rounds"],
        "seconds": seconds,
    }


def _commit() -> str:
    """The checked-out commit, with ``+dirty`` when the working tree has changes."""
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every variant and write the results JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test scale (32 px, 16 images per site)")
    parser.add_argument("--out", type=Path, default=Path("runs/dp-tradeoff"), help="run folders")
    parser.add_argument("--cache-dir", default=None, help="synthetic data cache (default: the generator's)")
    parser.add_argument("--strategy", default="bnp_matching", help="federated.strategy (default bnp_matching)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 2.0])
    parser.add_argument("--clip-norm", type=float, default=1.0, help="federated.privacy.dp.clip_norm (default 1)")
    parser.add_argument("--delta", type=float, default=1e-5, help="federated.privacy.dp.delta (default 1e-5)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 1)")
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per round (default 5)")
    parser.add_argument("--local-steps", type=int, default=None, help="cap on local steps (default 8; quick 2)")
    parser.add_argument("--json", type=Path, default=None, help="results file (e.g. docs/results/dp_tradeoff.json)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.local_steps = args.local_steps or (2 if args.quick else 8)
    setup_logging()
    torch.set_num_threads(1)
    machine = machine_info()
    began = time.monotonic()
    variants = {NO_DP: run_variant(args, NO_DP, None)}
    for noise in args.noise:
        variants[f"z{noise:g}"] = run_variant(args, f"z{noise:g}", noise)
    result = {
        "settings": {
            "strategy": args.strategy, "rounds": args.rounds, "local_epochs": args.epochs,
            "local_steps": args.local_steps, "clip_norm": args.clip_norm, "delta": args.delta, "quick": args.quick,
            "partition": "site", "sites": NUM_SITES,
            "epsilon": "per site, against the server: sensitivity 2 * clip_norm, no sampling amplification, "
                       "RDP composition over the rounds (server/privacy.py)",
            "base_config": base_experiment(args.quick, None),
        },
        "machine": machine,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "commit": _commit(),
        "variants": variants,
        "seconds": time.monotonic() - began,
    }  # fmt: skip
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(json_safe(result), indent=2) + "\n")
    for name, run in variants.items():
        print(name, run["epsilon"], run["final"]["pooled_test"], round(run["seconds"]))
    return result


if __name__ == "__main__":
    main()
