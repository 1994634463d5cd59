"""Upper and lower bounds of federated training: centralized training and local-only training on the same data.

- ``centralized`` (upper bound): one model trained on the pooled training split of all sites, as if the data
  could be shared (:func:`mtmedformer.engine.trainer.fit`: warm-up + cosine schedule, best epoch by pooled
  validation score).
- ``local`` (lower bound): every client of a partition trains alone on its own data (``fit`` on its own
  train/val split), for each partition in ``--partitions``: ``site`` (the hospitals' own data) and
  ``dirichlet:<alpha>`` (the label-skewed clients of the iterative comparison). A client holding no sample
  annotated for a task trains without that task's head; that task's metric is then undefined for it.

Every model is scored per task on the pooled test split; local models also on their own test split.
Run folders: ``<out>/bounds/...`` (``<out>/bounds_learn/...`` at ``--scale learn``); a finished run with the
same config is reused on a re-run.

Usage::

    python -m benchmarks.fl_comparison.bounds [--quick] [--out runs/fl-comparison] [--epochs 6] [--central-epochs 10]
        [--partitions site dirichlet:0.1 dirichlet:0.5 dirichlet:100]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.fl_comparison.common import (
    NUM_SITES,
    CostModel,
    base_experiment,
    begin_part,
    build_config,
    common_parser,
    evaluate_state,
    headline,
    json_safe,
    log,
    measure_cost,
    pooled_splits,
    settings_of,
    site_splits,
    start,
    write_json,
)
from mtmedformer import TASKS
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.engine.trainer import fit
from mtmedformer.errors import ConfigError

SETTINGS = {  # key in bounds.json -> command-line attribute
    "epochs_local": "epochs", "epochs_centralized": "central_epochs", "minutes_local": "minutes",
    "minutes_centralized": "central_minutes", "warmup_steps": "warmup", "partitions": "partitions", "quick": "quick",
    "scale": "scale",
}  # fmt: skip
RUN_RESULT = "bound_result.json"  # per run folder: metrics and the config, to reuse a finished run


def parse_partition(text: str) -> dict[str, Any]:
    """``"site"`` or ``"dirichlet:<alpha>"`` -> the ``federated.partition`` section.

    Raises
    ------
    ConfigError
        If the text is neither form or alpha is not a positive number.
    """
    if text == "site":
        return {"scheme": "site"}
    scheme, _, alpha = text.partition(":")
    try:
        value = float(alpha)
    except ValueError:
        value = float("nan")
    if scheme != "dirichlet" or not value > 0:
        raise ConfigError(f"--partitions: '{text}' is not 'site' or 'dirichlet:<alpha>' with alpha > 0")
    return {"scheme": "dirichlet", "alpha": value, "seed": 0}


def train_bound(cfg: ExperimentConfig, train_set: Any, val_set: Any, test_set: Any) -> dict[str, Any]:
    """``fit`` one model (or reuse the finished run in ``cfg.train.output_dir``); return its state and record."""
    out = Path(cfg.train.output_dir)
    saved = out / RUN_RESULT
    if saved.exists() and (out / "best.pt").exists():
        record = json.loads(saved.read_text())
        if record.get("config") == json_safe(to_dict(cfg)):
            log.info("bounds: reusing the finished run in %s", out)
            return {"state": torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"], **record}
    result = fit(cfg, train_set, val_set, test_set, overwrite=True)
    epochs_run = len(result.history.rows)
    record = {
        "config": to_dict(cfg),
        "epochs_run": epochs_run,
        "epochs_planned": cfg.train.epochs,
        "cut_by_time_budget": epochs_run < cfg.train.epochs,
        "seconds": result.seconds,
        "num_train": len(train_set),
        "own_test": headline(result.test_metrics),
    }
    write_json(saved, record)
    return {"state": torch.load(out / "best.pt", map_location="cpu", weights_only=True)["model"], **record}


def centralized(base: dict, args: Any, out: Path, pooled: dict, site_tests: Mapping[str, Any]) -> dict[str, Any]:
    """Train the centralized model and score it on the pooled and per-site test splits."""
    section = _train_section(args, args.central_epochs, args.central_minutes, out / args.part / "centralized")
    cfg = build_config(base, train=section)
    log.info("bounds: centralized training on %d pooled images", len(pooled["train"]))
    run = train_bound(cfg, pooled["train"], pooled.get("val"), pooled.get("test"))
    state = run.pop("state")
    run.pop("config")
    return {
        **run,
        "pooled_test": headline(evaluate_state(cfg, state, pooled.get("test"))),
        "site_test": {name: headline(evaluate_state(cfg, state, ds)) for name, ds in site_tests.items()},
    }


def local_only(base: dict, args: Any, out: Path, partition: str, pooled: dict) -> dict[str, Any]:
    """Train every client of ``partition`` alone; score each on the pooled test split and its own test split."""
    section = parse_partition(partition)
    clients = site_splits(build_config(base, federated={"partition": section}), NUM_SITES)
    results: dict[str, Any] = {}
    for j, client in enumerate(clients):
        counts = client.train.task_counts()
        tasks = [t for t in TASKS if counts.get(t, 0) > 0]
        folder = out / args.part / "local" / partition.replace(":", "-") / f"client-{j}"
        cfg = build_config(
            base,
            model={"tasks": tasks},
            federated={"partition": section},
            train=_train_section(args, args.epochs, args.minutes, folder),
        )
        log.info(
            "bounds: local-only %s client %d (%s, %d images, tasks %s)",
            partition,
            j,
            client.name,
            len(client.train),
            tasks,
        )
        run = train_bound(cfg, client.train, client.val, client.test)
        state = run.pop("state")
        run.pop("config")
        results[client.name] = {
            **run,
            "tasks": tasks,
            "pooled_test": headline(evaluate_state(cfg, state, pooled["test"])),
        }
    return {"clients": results, "mean_pooled_test": _mean_over(results, "pooled_test")}


def _mean_over(clients: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, float | None]:
    # Mean over the clients whose metric is defined (a client without a task's head has no value for it).
    names = next(iter(clients.values()))[key].keys() if clients else ()
    out: dict[str, float | None] = {}
    for name in names:
        values = [c[key][name] for c in clients.values() if c[key].get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def _train_section(args: Any, epochs: int, minutes: float, folder: Path) -> dict[str, Any]:
    return {"epochs": epochs, "max_minutes": minutes, "output_dir": str(folder), "warmup_steps": args.warmup}


def plan_seconds(cost: CostModel, args: Any, pooled: dict) -> float:
    """Estimated wall time: every epoch of every model, with a validation pass per epoch (time caps ignored).

    The clients of one partition together hold the pooled training and validation images.
    """
    train, val = len(pooled["train"]), len(pooled.get("val", ()))
    epochs = args.central_epochs + args.epochs * len(args.partitions)
    return cost.seconds(epochs * train, epochs * val)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train the bounds and write ``<out>/bounds.json`` (``bounds_<scale>.json`` off the documented scale)."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per local-only model (default 6; quick 1)")
    parser.add_argument("--central-epochs", type=int, default=None, help="epochs, centralized (default 10; quick 1)")
    parser.add_argument("--minutes", type=float, default=None, help="time cap per local-only model (default 2)")
    parser.add_argument("--central-minutes", type=float, default=None, help="time cap, centralized (default 4)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps of the schedule (default 10; quick 0)")
    parser.add_argument(
        "--partitions",
        nargs="*",
        default=None,
        help="site and/or dirichlet:<alpha> for the local-only models; given without values: centralized only "
        "(default site dirichlet:0.1 dirichlet:0.5 dirichlet:100)",
    )
    args = parser.parse_args(argv)
    out = start(args)
    args.epochs = args.epochs or (1 if args.quick else 6)
    args.central_epochs = args.central_epochs or (1 if args.quick else 10)
    args.minutes = args.minutes or (1.0 if args.quick else 2.0)
    args.central_minutes = args.central_minutes or (1.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 10)
    if args.partitions is None:
        args.partitions = ["site"] if args.quick else ["site", "dirichlet:0.1", "dirichlet:0.5", "dirichlet:100"]
    for partition in args.partitions:
        parse_partition(partition)  # reject a bad value before anything trains
    args.part = "bounds" if args.scale == "documented" else f"bounds_{args.scale}"
    base = base_experiment(args.quick, args.cache_dir, args.scale)
    cfg = build_config(base, federated={"partition": {"scheme": "site"}})
    pooled = pooled_splits(cfg)
    site_tests = {s.name: s.test for s in site_splits(cfg, NUM_SITES)}
    cost = measure_cost(cfg, pooled["train"])
    estimate = plan_seconds(cost, args, pooled)
    detail = (
        f"centralized {args.central_epochs} epochs + local-only on {len(args.partitions)} partitions, "
        f"{args.epochs} epochs each, {cost.train_s_per_image * 1000:.0f} ms per training image"
    )
    settings = settings_of(args, SETTINGS) | {"base_config": base}
    run = begin_part(args.part, args, out, (estimate, detail), settings, pooled={k: len(v) for k, v in pooled.items()})
    if run is None:
        return {"estimate_s": estimate}
    run.results["centralized"] = centralized(base, args, out, pooled, site_tests)
    run.results["local"] = {}
    run.save()
    for partition in args.partitions:
        run.results["local"][partition] = local_only(base, args, out, partition, pooled)
        run.save()
    return run.finish()


if __name__ == "__main__":
    main()
