"""One-shot merging: J sites train alone, then their weights are merged once (FedAvg, hard or soft matching).

For each variant and seed the J = 3 synthetic sites (partition by site: each hospital's own images, prevalence
and acquisition look) train a model for ``--epochs`` local epochs (constant learning rate, as in a federated
round). The site models are then merged into one model by

- ``fedavg``: the coordinate-wise average weighted by training-set size (McMahan et al., AISTATS 2017);
- ``matching``: :func:`strategies.matching.match_and_merge` with ``previous=None`` (the largest site is the
  reference frame; PFNM posterior with no prior: Yurochkin et al., ICML 2019; Wang et al., ICLR 2020);
- ``matching_sinkhorn``: the same with soft optimal-transport alignment (``alignment: sinkhorn``; Imfeld et
  al., ICLR 2024; :mod:`strategies.matching.soft`);

and each merge is also fine-tuned for one federated round (``<merge>+1``: every site trains one epoch from the
merged model, the results are averaged by FedAvg). Every model (the sites', the merges, the fine-tuned merges)
is scored per task on the pooled test split and on each site's test split. The ``best site`` is picked on the
pooled *validation* split, never on test. The server seconds of each merge are recorded.

Variants: ``independent`` (each site initialises with its own seed: the setting of one-shot merging of
independently trained models) and ``shared`` (every site starts from the same initial weights, as in FL).
``--seeds`` repeats everything with other initial weights and data orders (the data set stays the same).

Usage::

    python -m benchmarks.fl_comparison.one_shot [--quick] [--out runs/fl-comparison] [--epochs 10] [--seeds 0 1 2]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    log,
    measure_cost,
    moved_by_kind,
    pooled_splits,
    site_splits,
    start,
    weighted_average,
)
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.data.site import SiteData
from mtmedformer.engine.local import train_locally
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.models import build_model
from strategies.matching import ClientUpdate, MatchingConfig, build_spec, match_and_merge

VARIANTS = ("independent", "shared")
DATA_SEED_OFFSET = 1000  # site j's data order uses seed 1000 + j in both variants


MERGES = ("fedavg", "matching", "matching_sinkhorn")
MATCHING = {"matching": MatchingConfig(), "matching_sinkhorn": MatchingConfig(alignment="sinkhorn")}


def init_seed(variant: str, seed: int, site_index: int) -> int:
    """Seed of site ``site_index``'s initial weights: its own (``independent``) or the shared one (``shared``)."""
    return seed + site_index if variant == "independent" else seed


def data_seed(seed: int, site_index: int) -> int:
    """Seed of site ``site_index``'s data order (the same in both variants; seed 0 keeps the first measurement's)."""
    return DATA_SEED_OFFSET + 100 * seed + site_index


def train_site(
    cfg: ExperimentConfig,
    site: SiteData,
    epochs: int,
    init: int,
    data_order: int,
    start: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train one site's model from the initial weights of seed ``init`` (or from ``start``); return state and timing."""
    seed_everything(init)
    objects = build_model_and_loss(cfg)
    if start is not None:
        objects.model.load_state_dict(start)
    result = train_locally(objects.model, objects.loss_fn, site.train, cfg, epochs=epochs, seed=data_order)
    return {
        "state": {k: v.detach().clone() for k, v in objects.model.state_dict().items()},
        "num_examples": len(site.train),
        "task_counts": site.train.task_counts(),
        "seconds": result.seconds,
        "final_loss": result.loss,
    }


def score(cfg: ExperimentConfig, state: dict[str, torch.Tensor], pooled: dict, sites: Sequence[SiteData]) -> dict:
    """Headline metrics of one model on pooled val, pooled test, and every site's test split."""
    return {
        "pooled_val": headline(evaluate_state(cfg, state, pooled.get("val"))),
        "pooled_test": headline(evaluate_state(cfg, state, pooled.get("test"))),
        "site_test": {s.name: headline(evaluate_state(cfg, state, s.test)) for s in sites},
    }


def merge(name: str, trained: dict[str, dict[str, Any]], spec: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Merge the site models by ``name`` (see :data:`MERGES`); return the state and the merge's record."""
    names = list(trained)
    began = time.perf_counter()
    if name == "fedavg":
        state = weighted_average([trained[n]["state"] for n in names], [trained[n]["num_examples"] for n in names])
        return state, {"seconds": time.perf_counter() - began}
    merged = match_and_merge(
        {n: ClientUpdate(trained[n]["state"], trained[n]["num_examples"], trained[n]["task_counts"]) for n in names},
        spec,
        previous=None,
        config=MATCHING[name],
    )
    return merged.state_dict, {**_diagnostics(merged.diagnostics.summary()), "seconds": time.perf_counter() - began}


def fine_tune_round(
    cfg: ExperimentConfig, sites: Sequence[SiteData], start: dict[str, torch.Tensor], seed: int
) -> dict[str, torch.Tensor]:
    """One federated round from ``start``: every site trains one epoch, FedAvg of the results."""
    tuned = [train_site(cfg, site, 1, seed, data_seed(seed, j) + 50, start) for j, site in enumerate(sites)]
    return weighted_average([t["state"] for t in tuned], [t["num_examples"] for t in tuned])


def run_variant(
    cfg: ExperimentConfig, variant: str, sites: Sequence[SiteData], pooled: dict, epochs: int, seed: int
) -> dict[str, Any]:
    """Train the sites of one variant and seed, merge them every way (and fine-tune each), score every model."""
    trained = {}
    for j, site in enumerate(sites):
        log.info(
            "one-shot %s, seed %d: training %s (%d images, %d epochs)",
            variant, seed, site.name, len(site.train), epochs,
        )
        trained[site.name] = train_site(cfg, site, epochs, init_seed(variant, seed, j), data_seed(seed, j))
    with torch.device("meta"):  # the spec needs module structure only
        spec = build_spec(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)))
    models = {n: trained[n]["state"] for n in trained}
    merges = {}
    for name in MERGES:
        models[name], merges[name] = merge(name, trained, spec)
        log.info("one-shot %s, seed %d: %s merge took %.2f s", variant, seed, name, merges[name]["seconds"])
    for name in MERGES:
        models[f"{name}+1"] = fine_tune_round(cfg, sites, models[name], seed)
    scores = {name: score(cfg, state, pooled, sites) for name, state in models.items()}

    def val_score(name: str) -> float:
        value = scores[name]["pooled_val"]["mean_score"]
        return -1.0 if value is None else value

    best = max(trained, key=val_score)
    log.info("one-shot %s, seed %d: best site on pooled val is %s", variant, seed, best)
    return {
        "models": scores,
        "best_site": best,
        "site_training": {
            n: {
                "num_examples": trained[n]["num_examples"],
                "seconds": trained[n]["seconds"],
                "final_loss": trained[n]["final_loss"],
                "init_seed": init_seed(variant, seed, j),
            }
            for j, n in enumerate(trained)
        },
        "merges": merges,
    }


def _diagnostics(summary: dict[str, float]) -> dict[str, Any]:
    # Moved fractions summarised per kind of group; the scalar diagnostics kept as they are.
    moved = {k.removeprefix("matching/moved/"): v for k, v in summary.items() if k.startswith("matching/moved/")}
    scalars = {k.removeprefix("matching/"): v for k, v in summary.items() if not k.startswith("matching/moved/")}
    return {"moved": moved_by_kind(moved), **scalars}


def plan_seconds(cost: CostModel, sites: Sequence[SiteData], pooled: dict, epochs: int, runs: int) -> float:
    """Estimated wall time of ``runs`` (variant, seed) runs: site training, the fine-tuning rounds, scoring every
    model (matching time not included)."""
    train = (epochs + len(MERGES)) * sum(len(s.train) for s in sites)
    per_model = sum(len(pooled[k]) for k in ("val", "test") if k in pooled) + sum(len(s.test or ()) for s in sites)
    return runs * cost.seconds(train, (len(sites) + 2 * len(MERGES)) * per_model)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the one-shot comparison and write ``<out>/one_shot.json``; return the results."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs per site (default 10; quick 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2; quick 0)")
    args = parser.parse_args(argv)
    out = start(args)
    epochs = args.epochs or (1 if args.quick else 10)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    base = base_experiment(args.quick, args.cache_dir, args.scale)
    cfg = build_config(base, federated={"partition": {"scheme": "site"}})
    sites = site_splits(cfg, NUM_SITES)
    pooled = pooled_splits(cfg)
    cost = measure_cost(cfg, sites[0].train)
    estimate = plan_seconds(cost, sites, pooled, epochs, len(args.variants) * len(seeds))
    detail = (
        f"{len(args.variants)} variants x {len(seeds)} seeds x {NUM_SITES} sites x {epochs} epochs, "
        f"{cost.train_s_per_image * 1000:.0f} ms per training image"
    )
    torch.set_num_threads(cfg.train.threads)  # 1 at the documented scale (as start() sets), 2 at the learn scale
    run = begin_part(
        "one_shot" if args.scale == "documented" else f"one_shot_{args.scale}",
        args,
        out,
        (estimate, detail),
        {
            "epochs": epochs,
            "variants": list(args.variants),
            "seeds": seeds,
            "merges": list(MERGES),
            "quick": args.quick,
            "scale": args.scale,
            "config": to_dict(cfg),
        },
        sites={s.name: {k: len(getattr(s, k) or ()) for k in ("train", "val", "test")} for s in sites},
        pooled={k: len(v) for k, v in pooled.items()},
        variants={},
    )
    if run is None:
        return {"estimate_s": estimate}
    for variant in args.variants:
        per_seed = run.results["variants"].setdefault(variant, {"seeds": {}})["seeds"]
        for seed in seeds:
            per_seed[str(seed)] = run_variant(cfg, variant, sites, pooled, epochs, seed)
            run.save()
    return run.finish()


if __name__ == "__main__":
    main()
