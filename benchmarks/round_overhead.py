"""Per-round overhead of federated training: round wall time against the clients' critical-path compute.

For each round the server records (``rounds.jsonl``) its wall time, the critical path of client compute
(slowest site's local training + slowest site's evaluation: the round cannot end sooner when sites compute
in parallel) and the bytes of model arrays sent and received. This script runs

- ``simulation``: ``flwr run .`` on the Ray backend with 2 SuperNodes of 1 CPU each (one per core, so the
  sites really do compute in parallel on this 2-core machine), and
- ``deployment``: the loopback deployment of the tests (SuperLink with TLS and SuperNode authentication,
  two SuperNodes as separate processes), when ``--deployment`` is given,

then prints per-round and steady-state (rounds >= 2: round 1 also pays Ray start-up, data loading and
model building) ratios of wall time to critical path, and bytes per round.

The ratio depends on how much a site computes per round, because most of the overhead is a fixed cost per
message exchange (see ``docs/measurements.md``, "Per-round overhead"): ``--images-per-site`` and
``--local-epochs`` set the workload, and the printed ``overhead s`` column (wall time minus critical path) is
the fixed cost itself.

Usage (from the repository root)::

    python -m benchmarks.round_overhead [--rounds 4] [--deployment] [--images-per-site 120]
        [--local-epochs 1] [--skip-simulation] [--trace] [--fused-evaluation] [--plain-arrays]
        [--warm-baseline] [--poll-baseline] [--task-poll 0.1] [--json out.json]

Targets (issue): <= 1.15x in simulation, <= 1.5x in the loopback deployment.
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

from client.supernode import DEFAULT_POLL_S
from mtmedformer.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
# Small enough for a few minutes on 2 cores, big enough that compute dominates start-up noise.
OVERRIDES = [
    "federated.rounds={rounds}",
    "federated.local_epochs={local_epochs}",
    "federated.min_available_nodes=2",
    "federated.strategy=fedavg",
    "federated.client_threads=1",
    "data.synthetic.num_sites=2",
    "data.synthetic.images_per_site={images_per_site}",
    "federated.partition.scheme=site",
]


def read_rounds(run_dir: Path) -> list[dict]:
    """The per-round rows written by the server."""
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]


def summarise(name: str, rows: list[dict], fused: bool = False) -> dict:
    """Per-round ratios, the steady-state median and the whole run's ratio.

    Steady state = rounds >= 2 (round 1 also pays start-up, data loading and model building) and, with fused
    evaluation, before the last round (which alone has a separate evaluation exchange). The run ratio is the
    sum of round wall times over the sum of critical paths, every round included.
    """
    ratios = [r["time/round_s"] / r["time/client_critical_s"] for r in rows if r.get("time/client_critical_s")]
    steady_rows = rows[1:-1] if fused and len(rows) > 2 else rows[1:] or rows
    steady = [r["time/round_s"] / r["time/client_critical_s"] for r in steady_rows if r.get("time/client_critical_s")]
    critical = sum(r["time/client_critical_s"] for r in rows)
    return {
        "fused_evaluation": fused,
        "run_ratio": sum(r["time/round_s"] for r in rows) / critical if critical else None,
        "setting": name,
        "rounds": [
            {k: r.get(k) for k in ("round", "time/round_s", "time/client_critical_s", "bytes/sent", "bytes/received")}
            for r in rows
        ],
        "ratio_per_round": ratios,
        "steady_state_ratio": statistics.median(steady) if steady else None,
        "steady_state_overhead_s": statistics.median(
            r["time/round_s"] - r["time/client_critical_s"] for r in steady_rows
        ) if steady_rows else None,
        "bytes_per_round": statistics.median(r["bytes/sent"] + r["bytes/received"] for r in rows),
    }


def _overrides(rounds: int, workload: dict[str, int], fused: bool, deployment: bool = False) -> str:
    chosen = [o for o in OVERRIDES if not (deployment and o.startswith("data.synthetic"))]
    chosen += [f"federated.fused_evaluation={str(fused).lower()}",
               f"federated.pack_arrays={str(workload['pack_arrays']).lower()}"]
    return ";".join(o.format(rounds=rounds, **workload) for o in chosen)


def run_simulation(rounds: int, out: Path, workload: dict[str, int], fused: bool = False) -> dict:
    """``flwr run .`` with 2 SuperNodes x 1 CPU; returns the summary."""
    # `flwr run` starts `flower-superlink` by name: put this environment's executables first on PATH.
    env = {**os.environ, "FLWR_HOME": str(out / "flwr-home"), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_TELEMETRY_ENABLED": "0", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    overrides = _overrides(rounds, workload, fused)
    run_config = (f"experiment='configs/federated_demo.yaml' overrides='{overrides}' "
                  f"output-dir='{out}' run-name='simulation'")
    flwr = Path(sys.executable).with_name("flwr")
    database = out / "flwr-home" / "local-superlink" / "state.db"
    try:
        subprocess.run(
            [str(flwr), "run", ".", "--stream", "--federation-config",
             "num-supernodes=2 client-resources-num-cpus=1", "--run-config", run_config],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=1800,
        )
    finally:
        subprocess.run(["pkill", "-f", f"flower-superlink.*--database {database}"], check=False)
    return summarise("simulation (Ray, 2 SuperNodes x 1 CPU)", read_rounds(out / "simulation"), fused)


def run_deployment(
    rounds: int, out: Path, workload: dict[str, int], trace: bool = False, fused: bool = False,
    env: dict[str, str] | None = None, label: str = "",
) -> dict:
    """The loopback TLS + authentication deployment of tests/deploy; returns the summary.

    ``env`` adds environment variables to every Flower process (e.g. ``MTMEDFORMER_WARM_CLIENT=0`` for the
    baseline without the sites' warm ClientApp servers); ``label`` is appended to the setting's name.

    With ``trace`` the Flower processes log at DEBUG level (timestamped; a little slower) and the summary gets a
    ``trace`` entry: the median seconds of each phase of a message exchange (:mod:`benchmarks.deployment_trace`).
    """
    # The same launch commands, certificates and keys that tests/deploy verifies.
    from tests.deploy.harness import demo_sites, start_deployment

    sites = demo_sites(out / "sites", num_sites=2, images_per_site=workload["images_per_site"], image_size=64)
    overrides = _overrides(rounds, workload, fused, deployment=True)
    run_config = {"experiment": str(ROOT / "configs" / "federated_demo.yaml"), "overrides": overrides,
                  "output-dir": str(out / "results"), "run-name": "deployment"}
    extra_env = {**({"FLWR_LOG_LEVEL": "DEBUG"} if trace else {}), **(env or {})}
    deployment = start_deployment(out / "deployment", sites, run_config, extra_env=extra_env)
    try:
        info = deployment.run(timeout=1800, poll_interval=15.0)  # each poll is a `flwr` process: keep CPU for the sites
        if not info.completed:
            raise RuntimeError(f"loopback run ended {info.status}:\n{info.server_log}")
    finally:
        deployment.stop()
    rows = read_rounds(out / "results" / "deployment")
    summary = summarise("loopback deployment (TLS + node auth, 2 SuperNodes)" + label, rows, fused)
    summary["env"] = dict(env or {})
    if trace:
        from benchmarks.deployment_trace import read_site_logs, summarise_trace

        summary["trace"] = summarise_trace(read_site_logs(out / "deployment" / "logs", list(sites)))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--deployment", action="store_true", help="also run the loopback deployment")
    parser.add_argument("--images-per-site", type=int, default=120, help="synthetic images per site")
    parser.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    parser.add_argument("--skip-simulation", action="store_true", help="run only the loopback deployment")
    parser.add_argument("--trace", action="store_true", help="DEBUG logs in the deployment: print where time goes")
    parser.add_argument("--fused-evaluation", action="store_true",
                        help="federated.fused_evaluation: one message exchange per round (evaluation rides along)")
    parser.add_argument("--plain-arrays", action="store_true",
                        help="federated.pack_arrays=false: one Flower object per tensor (the baseline of packing)")
    parser.add_argument("--warm-baseline", action="store_true",
                        help="run the deployment first with MTMEDFORMER_WARM_CLIENT=0 (a ClientApp process per "
                             "message imports everything, as before client/warm.py), then with the warm servers")
    parser.add_argument("--poll-baseline", action="store_true",
                        help="run the deployment first with MTMEDFORMER_SUPERNODE_POLL_S=3 (Flower's fixed SuperNode "
                             "poll, as before client/supernode.py), then with the default")
    parser.add_argument("--task-poll", type=float, default=None,
                        help="SuperExec task poll of the deployment (s; default: the harness's 0.1, Flower's 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workload = {"images_per_site": args.images_per_site, "local_epochs": args.local_epochs,
                "pack_arrays": not args.plain_arrays}
    out = Path(tempfile.mkdtemp(prefix="round-overhead-"))
    results = []
    started = time.monotonic()
    if not args.skip_simulation:
        results.append(run_simulation(args.rounds, out, workload, fused=args.fused_evaluation))
    if args.deployment:
        poll = {} if args.task_poll is None else {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(args.task_poll)}
        if args.poll_baseline:
            flower_poll = {**poll, "MTMEDFORMER_SUPERNODE_POLL_S": "3"}
            results.append(run_deployment(args.rounds, out / "deployment-poll3", workload, trace=args.trace,
                                          fused=args.fused_evaluation, env=flower_poll,
                                          label=", SuperNode poll 3 s (Flower's)"))
        if args.warm_baseline:
            results.append(run_deployment(args.rounds, out / "deployment-cold", workload, trace=args.trace,
                                          fused=args.fused_evaluation, env={**poll, "MTMEDFORMER_WARM_CLIENT": "0"},
                                          label=", no warm ClientApp server"))
        results.append(run_deployment(args.rounds, out / "deployment", workload, trace=args.trace,
                                      fused=args.fused_evaluation, env=poll,
                                      label=", warm ClientApp servers" if args.warm_baseline else
                                      f", SuperNode poll {DEFAULT_POLL_S:g} s" if args.poll_baseline else ""))
    for res in results:
        print(f"\n{res['setting']}")
        print("| round | wall s | client critical path s | overhead s | ratio | MB sent | MB received |")
        print("|---|---|---|---|---|---|---|")
        for row, ratio in zip(res["rounds"], res["ratio_per_round"], strict=False):
            wall, critical = row["time/round_s"], row["time/client_critical_s"]
            print(f"| {row['round']} | {wall:.1f} | {critical:.1f} | {wall - critical:.1f} | {ratio:.2f} | "
                  f"{row['bytes/sent'] / 1e6:.1f} | {row['bytes/received'] / 1e6:.1f} |")
        which = "rounds >= 2 before the last" if res["fused_evaluation"] else "rounds >= 2"
        print(f"steady-state ratio (median of {which}): {res['steady_state_ratio']:.2f}; "
              f"overhead {res['steady_state_overhead_s']:.1f} s per round; whole run {res['run_ratio']:.2f}; "
              f"bytes per round: {res['bytes_per_round'] / 1e6:.1f} MB")
        if "trace" in res:
            from benchmarks.deployment_trace import format_trace

            print("\nwhere a message exchange's time goes (SuperNode DEBUG log, rounds >= 2, median over sites):")
            print(format_trace(res["trace"]))
    print(f"\nworkload: {args.images_per_site} images per site, {args.local_epochs} local epoch(s) per round, "
          f"fused evaluation {'on' if args.fused_evaluation else 'off'}, "
          f"model arrays {'plain' if args.plain_arrays else 'packed'}")
    print(f"\n(total benchmark time {time.monotonic() - started:.0f} s; results in {out})")
    if args.json:
        record = {"workload": workload, "fused_evaluation": args.fused_evaluation, "results": results,
                  "date": time.strftime("%Y-%m-%d", time.gmtime()), "load_average_end": list(os.getloadavg()),
                  "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=False).stdout.strip()}
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
