"""Server cost of one training round's replies: screening plus the strategy's aggregation, on the demo model.

For the model of ``configs/federated_demo.yaml`` (three sites), every trial fabricates the three packed
training replies the ClientApp would send (the global weights plus site-specific noise, packed as
:func:`strategies.packing.packing_mod` packs them; not timed), then times

- ``screen``: ``screen_replies`` (decoding and checking every reply against the global model), and
- ``aggregate``: the round loop's call of the strategy's ``aggregate_train`` on the accepted replies and its
  conversion of the result into the next global model's arrays (``server.rounds._as_reference_dtypes``),

for FedAvg and for BNP matching (the demo's strategy). With ``--baseline-rev REV`` the same measurement also
runs on the code of git revision ``REV`` (exported with ``git archive`` into a temporary folder), in the same
invocation and interleaved trial by trial with the working tree, and the ratios working tree / baseline are
printed and written: a code change that makes screening or aggregation slower shows as a ratio above 1.

Each measurement runs in a fresh subprocess with 1 torch thread (the server's process shares the machine
with the sites); figures are medians over ``--trials`` trials.

Usage::

    python -m benchmarks.screen_aggregate_cost [--baseline-rev REV] [--trials 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("fedavg", "bnp_matching")
SITES = 3


def worker(strategy_name: str) -> dict[str, float]:
    """One trial in this process: seconds of screening and of aggregation for ``strategy_name``."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from mtmedformer.config import load_config
    from mtmedformer.engine.setup import build_model_and_loss
    from server.rounds import _as_reference_dtypes
    from server.strategy_factory import build_strategy
    from strategies import keys
    from strategies.packing import pack_content

    try:  # one screening module (the single-representation change)
        from server.screening import screen_replies
    except ImportError:  # earlier revisions screened in the round loop's module
        from server.rounds import screen_replies

    torch.set_num_threads(1)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    cfg = load_config(ROOT / "configs" / "federated_demo.yaml", [f"federated.strategy={strategy_name}"])
    torch.manual_seed(0)
    global_state = {k: v.detach().clone() for k, v in build_model_and_loss(cfg).model.state_dict().items()}
    reference = {k: v.numpy() for k, v in global_state.items()}
    strategy = build_strategy(cfg)
    sent = []
    for node in range(1, SITES + 1):
        instruction = Message(content=RecordDict({keys.CONFIG: ConfigRecord({})}), dst_node_id=node,
                              message_type="train")
        instruction.metadata.__dict__["_message_id"] = instruction.object_id
        sent.append(instruction)

    class _Grid:  # configure_train samples the nodes of this grid
        def get_node_ids(self) -> list[int]:
            return list(range(1, SITES + 1))

    list(strategy.configure_train(1, ArrayRecord(global_state), ConfigRecord({}), _Grid()))
    generator = torch.Generator().manual_seed(1)
    replies = []
    for node, instruction in enumerate(sent, start=1):
        state = {
            k: (v + 0.01 * torch.randn(v.shape, generator=generator, dtype=v.dtype)) if v.is_floating_point() else v
            for k, v in global_state.items()
        }
        metrics = {keys.NUM_EXAMPLES: 100 + node, keys.LOSS: 1.0}
        for task in cfg.model.tasks:
            metrics[keys.task_count_key(task)] = 100 + node
            metrics[keys.task_trained_key(task)] = 1.0
        content = RecordDict({
            keys.ARRAYS: ArrayRecord(state),
            keys.METRICS: MetricRecord(metrics),
            keys.SITE: ConfigRecord({keys.SITE_NAME: f"site-{node}"}),
        })
        pack_content(content)
        reply = Message(content=content, reply_to=instruction)
        replies.append(reply)
    began = time.perf_counter()
    screened = screen_replies(sent, replies, {}, reference)
    screened_at = time.perf_counter()
    if len(screened.accepted) != SITES:
        raise RuntimeError(f"screening rejected fabricated replies: {screened.failures}")
    out = strategy.aggregate_train(1, screened.accepted)
    # An Aggregate (strategies.server_strategy), or Flower's (ArrayRecord, MetricRecord) in earlier revisions.
    _as_reference_dtypes(out.arrays if hasattr(out, "arrays") else out[0], reference)
    done = time.perf_counter()
    return {"screen_s": screened_at - began, "aggregate_s": done - screened_at}


def _trial(tree: Path, strategy_name: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", strategy_name],
        cwd=tree, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker failed in {tree}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _export(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    """Measure the working tree (and the baseline revision, interleaved), print and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=STRATEGIES, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-rev", default=None, help="git revision to compare with, e.g. main")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="baseline-") as tmp:
        trees = {"current": ROOT}
        if args.baseline_rev:
            trees["baseline"] = _export(args.baseline_rev, Path(tmp))
        samples: dict[str, dict[str, list[dict[str, float]]]] = {t: {s: [] for s in STRATEGIES} for t in trees}
        for _ in range(args.trials):
            for strategy_name in STRATEGIES:
                for tree_name, tree in trees.items():
                    samples[tree_name][strategy_name].append(_trial(tree, strategy_name))
    medians = {
        tree: {s: {k: statistics.median(t[k] for t in trials) for k in ("screen_s", "aggregate_s")}
               for s, trials in by_strategy.items()}
        for tree, by_strategy in samples.items()
    }
    result = {
        "what": "median seconds of screen_replies, and of aggregate_train plus the conversion of its result into "
        "the next global model's arrays, for 3 packed replies of the demo model",
        "baseline_rev": args.baseline_rev,
        "trials": args.trials,
        "medians": medians,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{'strategy':<14}{'tree':<10}{'screen s':>10}{'aggregate s':>13}{'total s':>10}")
    for tree, by_strategy in medians.items():
        for s, m in by_strategy.items():
            print(f"{s:<14}{tree:<10}{m['screen_s']:>10.4f}{m['aggregate_s']:>13.4f}"
                  f"{m['screen_s'] + m['aggregate_s']:>10.4f}")
    if "baseline" in medians:
        result["ratio_current_over_baseline"] = {
            s: {
                "screen": medians["current"][s]["screen_s"] / medians["baseline"][s]["screen_s"],
                "aggregate": medians["current"][s]["aggregate_s"] / medians["baseline"][s]["aggregate_s"],
                "total": sum(medians["current"][s].values()) / sum(medians["baseline"][s].values()),
            }
            for s in STRATEGIES
        }
        for s, r in result["ratio_current_over_baseline"].items():
            print(f"{s}: current / baseline = screen {r['screen']:.2f}x, aggregate {r['aggregate']:.2f}x, "
                  f"total {r['total']:.2f}x")
    if args.json:
        from mtmedformer.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
