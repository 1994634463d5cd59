"""Sites that hold different tasks: one with masks only, one with boxes only, one with labels only, one with all.

The multi-task federation the MTMedFormer paper is about. The pooled training split is dealt out to 4 clients
(``partition: iid``, seed 0) and each client keeps only the annotations of its tasks (the others are removed
from its records, as a hospital that never drew them). Starting from one seeded global model, every round each
client trains ``E`` local epochs from the global model (the project's local training, constant learning rate,
fresh optimizer) and the server aggregates by

- ``fedavg_all``: FedAvg of every tensor weighted by the clients' training-set sizes — a head a client did not
  train enters with the client's copy of it (its weight decay applied, no gradient);
- ``fedavg_task``: FedAvg of the encoder by training-set size and of each task head only over the clients that
  trained that task, weighted by their annotated counts for it;
- ``matching``: :func:`strategies.matching.match_and_merge` with the previous global model (what the
  ``bnp_matching`` strategy calls; it pools the heads per task like ``fedavg_task``).

The round loop runs in process (no Flower messages) so that the three aggregators see identical client
updates in round 1. After every round the global model is scored on the pooled test split; the server seconds
of each aggregation are recorded. Repeated for ``--seeds`` (initial weights and data order).

``--withheld F`` (part ``task_split_partial``) measures the other half of partial labelling: the 4 clients hold
every task, but each training image's label, mask and boxes are withheld independently with probability ``F``
(as the generator's ``*_withheld_fraction`` does; drawn per client, so the clients' annotated counts per task
differ by chance). Validation and test images keep every annotation, so the pooled test split is the same as in
the task layout.

Usage::

    python -m benchmarks.fl_comparison.task_split [--quick] [--out runs/fl-comparison] [--rounds 5]
        [--local-epochs 1 3] [--seeds 0 1 2] [--withheld 0.5]
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.fl_comparison.common import (
    CostModel,
    base_experiment,
    begin_part,
    build_config,
    common_parser,
    evaluate_state,
    headline,
    log,
    measure_cost,
    moved_by_kind,
    pooled_splits,
    site_splits,
    start,
    weighted_average,
)
from benchmarks.fl_comparison.one_shot import train_site
from mtmedformer import TASKS
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.site import SiteData
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.models import build_model
from strategies.matching import ClientUpdate, MatchingConfig, PermutationSpec, build_spec, match_and_merge

CLIENT_TASKS: dict[str, tuple[str, ...]] = {
    "masks-only": ("segmentation",),
    "boxes-only": ("detection",),
    "labels-only": ("classification",),
    "all-tasks": ("classification", "segmentation", "detection"),
}
AGGREGATORS = ("fedavg_all", "fedavg_task", "matching")


def keep_tasks(dataset: MedicalImageDataset, tasks: Sequence[str]) -> MedicalImageDataset:
    """A copy of ``dataset`` whose records keep only the annotations of ``tasks`` (the others set to unannotated).

    Raises
    ------
    ValueError
        If a record derives its boxes from its mask and detection is kept without segmentation.
    """
    for record in dataset.records:
        if record.boxes_from_mask and "detection" in tasks and "segmentation" not in tasks:
            raise ValueError(f"{record.origin}: boxes come from the mask; cannot keep detection without masks")
    keep = tuple(task in tasks for task in ("classification", "segmentation", "detection"))
    return _with_annotations(dataset, [keep] * len(dataset.records))


def _with_annotations(dataset: MedicalImageDataset, keep: Sequence[Sequence[bool]]) -> MedicalImageDataset:
    """A copy of ``dataset`` where record ``i`` keeps its label, masks and boxes where ``keep[i]`` says so."""
    records = [
        dataclasses.replace(
            record,
            label=record.label if label else None,
            masks=record.masks if mask else None,
            boxes=record.boxes if boxes else None,
            boxes_from_mask=record.boxes_from_mask and boxes,
        )
        for record, (label, mask, boxes) in zip(dataset.records, keep, strict=True)
    ]
    out = copy.copy(dataset)
    out.records = records
    out.undecodable = set()
    return out


def withhold_annotations(dataset: MedicalImageDataset, fraction: float, seed: int) -> MedicalImageDataset:
    """A copy of ``dataset`` where each record's label, mask and boxes are each removed with probability
    ``fraction`` (independent draws, seeded by ``seed`` and the record's position).

    Raises
    ------
    ValueError
        If ``fraction`` is outside [0, 1], or a record derives its boxes from its mask (withholding the mask
        would remove the boxes with it: the draws would not be independent).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"withheld fraction must be in [0, 1], got {fraction}")
    derived = next((r for r in dataset.records if r.boxes_from_mask), None)
    if derived is not None:
        raise ValueError(f"{derived.origin}: boxes come from the mask; withhold them together or not at all")
    keep = [np.random.default_rng([seed, i]).random(3) >= fraction for i in range(len(dataset.records))]
    return _with_annotations(dataset, keep)


def task_clients(cfg: ExperimentConfig) -> list[SiteData]:
    """The 4 clients of :data:`CLIENT_TASKS`: IID parts of the pooled data, each with its tasks' annotations."""
    parts = site_splits(cfg, len(CLIENT_TASKS))
    return [
        dataclasses.replace(part, name=name, train=keep_tasks(part.train, tasks))
        for part, (name, tasks) in zip(parts, CLIENT_TASKS.items(), strict=True)
    ]


def partial_clients(cfg: ExperimentConfig, fraction: float) -> list[SiteData]:
    """4 IID clients holding every task, each training image's annotations withheld with probability ``fraction``."""
    parts = site_splits(cfg, len(CLIENT_TASKS))
    return [
        dataclasses.replace(part, name=f"partial-{j}", train=withhold_annotations(part.train, fraction, seed=j))
        for j, part in enumerate(parts)
    ]


def task_weighted_average(updates: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """FedAvg with per-task pools: ``heads.<task>.*`` over the clients that trained the task (by its counts)."""
    names = list(updates)
    first = updates[names[0]]["state"]
    encoder = weighted_average([updates[n]["state"] for n in names], [updates[n]["num_examples"] for n in names])
    merged = dict(encoder)
    tasks = {key.split(".")[1] for key in first if key.startswith("heads.")}
    for task in tasks:
        members = [n for n in names if updates[n]["task_counts"].get(task, 0) > 0]
        if not members:
            continue  # nobody trained it: keep FedAvg of the unchanged copies
        head = weighted_average(
            [{k: v for k, v in updates[n]["state"].items() if k.startswith(f"heads.{task}.")} for n in members],
            [updates[n]["task_counts"][task] for n in members],
        )
        merged.update(head)
    return merged


def aggregate(
    name: str, updates: Mapping[str, Mapping[str, Any]], previous: Mapping[str, torch.Tensor], spec: PermutationSpec
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The new global model by aggregator ``name`` and its record (server seconds, matching diagnostics)."""
    began = time.perf_counter()
    if name == "fedavg_all":
        ids = list(updates)
        state = weighted_average([updates[n]["state"] for n in ids], [updates[n]["num_examples"] for n in ids])
        return state, {"seconds": time.perf_counter() - began}
    if name == "fedavg_task":
        return task_weighted_average(updates), {"seconds": time.perf_counter() - began}
    merged = match_and_merge(
        {n: ClientUpdate(u["state"], u["num_examples"], u["task_counts"]) for n, u in updates.items()},
        spec,
        previous=previous,
        config=MatchingConfig(),
    )
    summary = merged.diagnostics.summary()
    moved = {k.removeprefix("matching/moved/"): v for k, v in summary.items() if k.startswith("matching/moved/")}
    return merged.state_dict, {"seconds": time.perf_counter() - began, "moved": moved_by_kind(moved)}


def run_federation(
    cfg: ExperimentConfig,
    clients: Sequence[SiteData],
    pooled: Mapping[str, Any],
    aggregator: str,
    rounds: int,
    epochs: int,
    seed: int,
    spec: PermutationSpec,
) -> dict[str, Any]:
    """``rounds`` rounds of ``aggregator`` from the seed's initial model; pooled-test scores after every round."""
    seed_everything(seed)
    state = {k: v.detach().clone() for k, v in build_model_and_loss(cfg).model.state_dict().items()}
    records = []
    for rnd in range(1, rounds + 1):
        updates = {
            c.name: train_site(cfg, c, epochs, seed, 10_000 * (seed + 1) + 100 * rnd + j, state)
            for j, c in enumerate(clients)
        }
        state, record = aggregate(aggregator, updates, state, spec)
        record["round"] = rnd
        record["pooled_test"] = headline(evaluate_state(cfg, state, pooled.get("test")))
        records.append(record)
        log.info(
            "task split %s, E=%d, seed %d, round %d: pooled-test mean %s (%.2f s aggregation)",
            aggregator, epochs, seed, rnd, record["pooled_test"]["mean_score"], record["seconds"],
        )
    return {"rounds": records, "final": {"pooled_test": records[-1]["pooled_test"]}}


def plan_seconds(cost: CostModel, clients: Sequence[SiteData], pooled: Mapping[str, Any], rounds: int,
                 epochs: Sequence[int], runs: int) -> float:
    """Estimated wall time: local training and one pooled-test scoring per round, for every run."""
    train = sum(e for e in epochs) * rounds * sum(len(c.train) for c in clients)
    score = len(epochs) * rounds * len(pooled.get("test") or ())
    return runs * cost.seconds(train, score)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the task-split comparison and write ``<out>/task_split.json``; return the results."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 1)")
    parser.add_argument("--local-epochs", type=int, nargs="+", default=None, help="E values (default 1 3; quick 1)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2; quick 0)")
    parser.add_argument(
        "--withheld",
        type=float,
        default=0.0,
        help="instead of clients with different tasks: clients with every task and this share of each training "
        "image's annotations withheld (part task_split_partial; default 0 = the task layout)",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.withheld < 1.0:
        parser.error(f"--withheld must be in [0, 1), got {args.withheld}")
    out = start(args)
    rounds = args.rounds or (1 if args.quick else 5)
    epochs = args.local_epochs or ([1] if args.quick else [1, 3])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    cfg = build_config(
        base_experiment(args.quick, args.cache_dir, args.scale), federated={"partition": {"scheme": "iid", "seed": 0}}
    )
    torch.set_num_threads(cfg.train.threads)
    clients = partial_clients(cfg, args.withheld) if args.withheld else task_clients(cfg)
    pooled = pooled_splits(cfg)
    cost = measure_cost(cfg, pooled["train"])
    runs = len(AGGREGATORS) * len(seeds)
    estimate = plan_seconds(cost, clients, pooled, rounds, epochs, runs)
    detail = f"{len(AGGREGATORS)} aggregators x {len(seeds)} seeds x E in {epochs} x {rounds} rounds, 4 clients"
    run = begin_part(
        "task_split_partial" if args.withheld else "task_split",
        args,
        out,
        (estimate, detail),
        {
            "rounds": rounds,
            "local_epochs": epochs,
            "seeds": seeds,
            "aggregators": list(AGGREGATORS),
            "client_tasks": (
                {c.name: list(TASKS) for c in clients} if args.withheld
                else {k: list(v) for k, v in CLIENT_TASKS.items()}
            ),
            "withheld": args.withheld,
            "quick": args.quick,
            "scale": args.scale,
            "config": to_dict(cfg),
        },
        clients={c.name: {"train": len(c.train), "task_counts": c.train.task_counts()} for c in clients},
        pooled={k: len(v) for k, v in pooled.items()},
        runs={},
    )
    if run is None:
        return {"estimate_s": estimate}
    with torch.device("meta"):  # the spec needs module structure only
        spec = build_spec(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)))
    for e in epochs:
        for seed in seeds:
            for aggregator in AGGREGATORS:
                result = run_federation(cfg, clients, pooled, aggregator, rounds, e, seed, spec)
                run.results["runs"][f"e{e}-s{seed}-{aggregator}"] = {
                    "aggregator": aggregator, "local_epochs": e, "seed": seed, **result
                }
                run.save()
    return run.finish()


if __name__ == "__main__":
    main()
