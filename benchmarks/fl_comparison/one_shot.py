"""One-shot merging: J sites train alone, then their weights are merged once, by FedAvg or by neuron matching.

For each variant the J = 3 synthetic sites (partition by site: each hospital's own images, prevalence and
acquisition look) train a model for ``--epochs`` local epochs (constant learning rate, as in a federated round).
The site models are then merged into one model by

- ``fedavg``: the coordinate-wise average weighted by training-set size (McMahan et al., AISTATS 2017);
- ``matching``: :func:`strategies.matching.match_and_merge` with ``previous=None`` (the largest site is the
  reference frame; PFNM posterior with no prior: Yurochkin et al., ICML 2019; Wang et al., ICLR 2020),

and every model (the sites', both merges) is scored per task on the pooled test split and on each site's test
split. The ``best site`` is picked on the pooled *validation* split, never on test.

Variants: ``independent`` (each site initialises with its own seed: the setting of one-shot merging of
independently trained models) and ``shared`` (every site starts from the same initial weights, as in FL).

Usage::

    python -m benchmarks.fl_comparison.one_shot [--quick] [--out runs/fl-comparison] [--epochs 10]
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


def init_seed(variant: str, cfg: ExperimentConfig, site_index: int) -> int:
    """Seed of site ``site_index``'s initial weights: its own (``independent``) or the shared one (``shared``)."""
    return cfg.train.seed + site_index if variant == "independent" else cfg.train.seed


def train_site(cfg: ExperimentConfig, site: SiteData, epochs: int, init: int, data_seed: int) -> dict[str, Any]:
    """Train one site's model from the initial weights of seed ``init``; return its state and timing."""
    seed_everything(init)
    objects = build_model_and_loss(cfg)
    result = train_locally(objects.model, objects.loss_fn, site.train, cfg, epochs=epochs, seed=data_seed)
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


def run_variant(
    cfg: ExperimentConfig, variant: str, sites: Sequence[SiteData], pooled: dict, epochs: int
) -> dict[str, Any]:
    """Train the sites of one variant, merge them both ways, and score every model."""
    trained = {}
    for j, site in enumerate(sites):
        log.info("one-shot %s: training %s (%d images, %d epochs)", variant, site.name, len(site.train), epochs)
        trained[site.name] = train_site(cfg, site, epochs, init_seed(variant, cfg, j), DATA_SEED_OFFSET + j)
    names = list(trained)
    fedavg = weighted_average([trained[n]["state"] for n in names], [trained[n]["num_examples"] for n in names])
    with torch.device("meta"):  # the spec needs module structure only
        spec = build_spec(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)))
    began = time.monotonic()
    merged = match_and_merge(
        {n: ClientUpdate(trained[n]["state"], trained[n]["num_examples"], trained[n]["task_counts"]) for n in names},
        spec,
        previous=None,
        config=MatchingConfig(),
    )
    matching_seconds = time.monotonic() - began
    models = {n: trained[n]["state"] for n in names} | {"fedavg": fedavg, "matching": merged.state_dict}
    scores = {name: score(cfg, state, pooled, sites) for name, state in models.items()}

    def val_score(name: str) -> float:
        value = scores[name]["pooled_val"]["mean_score"]
        return -1.0 if value is None else value

    best = max(names, key=val_score)
    log.info("one-shot %s: best site on pooled val is %s; matching took %.1f s", variant, best, matching_seconds)
    return {
        "models": scores,
        "best_site": best,
        "site_training": {
            n: {
                "num_examples": trained[n]["num_examples"],
                "seconds": trained[n]["seconds"],
                "final_loss": trained[n]["final_loss"],
                "init_seed": init_seed(variant, cfg, j),
            }
            for j, n in enumerate(names)
        },
        "matching": {"seconds": matching_seconds, **_diagnostics(merged.diagnostics.summary())},
    }


def _diagnostics(summary: dict[str, float]) -> dict[str, Any]:
    # Moved fractions summarised per kind of group; the scalar diagnostics kept as they are.
    moved = {k.removeprefix("matching/moved/"): v for k, v in summary.items() if k.startswith("matching/moved/")}
    scalars = {k.removeprefix("matching/"): v for k, v in summary.items() if not k.startswith("matching/moved/")}
    return {"moved": moved_by_kind(moved), **scalars}


def plan_seconds(cost: CostModel, sites: Sequence[SiteData], pooled: dict, epochs: int, variants: int) -> float:
    """Estimated wall time: site training plus scoring 5 models per variant (matching time not included)."""
    train = epochs * sum(len(s.train) for s in sites)
    per_model = sum(len(pooled[k]) for k in ("val", "test") if k in pooled) + sum(len(s.test or ()) for s in sites)
    return variants * cost.seconds(train, (len(sites) + 2) * per_model)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the one-shot comparison and write ``<out>/one_shot.json``; return the results."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs per site (default 10; quick 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args(argv)
    out = start(args)
    epochs = args.epochs or (1 if args.quick else 10)
    base = base_experiment(args.quick, args.cache_dir)
    cfg = build_config(base, federated={"partition": {"scheme": "site"}})
    sites = site_splits(cfg, NUM_SITES)
    pooled = pooled_splits(cfg)
    cost = measure_cost(cfg, sites[0].train)
    estimate = plan_seconds(cost, sites, pooled, epochs, len(args.variants))
    detail = (
        f"{len(args.variants)} variants x {NUM_SITES} sites x {epochs} epochs, "
        f"{cost.train_s_per_image * 1000:.0f} ms per training image"
    )
    run = begin_part(
        "one_shot",
        args,
        out,
        (estimate, detail),
        {"epochs": epochs, "variants": list(args.variants), "quick": args.quick, "config": to_dict(cfg)},
        sites={s.name: {k: len(getattr(s, k) or ()) for k in ("train", "val", "test")} for s in sites},
        pooled={k: len(v) for k, v in pooled.items()},
        variants={},
    )
    if run is None:
        return {"estimate_s": estimate}
    for variant in args.variants:
        run.results["variants"][variant] = run_variant(cfg, variant, sites, pooled, epochs)
        run.save()
    return run.finish()


if __name__ == "__main__":
    main()
