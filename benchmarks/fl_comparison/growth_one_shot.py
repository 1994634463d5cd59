"""Does matching growth help one-shot merging? FedAvg vs fixed-width matching vs matching with growth, per seed.

The setting where PFNM's new units should matter most: J = 3 synthetic sites (partition by site) each
initialise their own model (independent seeds) and train it alone for ``--epochs`` local epochs; the three
site models are then merged once by

- ``fedavg``: coordinate-wise average weighted by training-set size (McMahan et al., AISTATS 2017);
- ``matching``: :func:`strategies.matching.match_and_merge`, fixed width (the largest site is the frame);
- ``matching_growth``: the same with ``growth=True`` (MLP hidden units and decoder hidden channels may open
  new global units, Yurochkin et al., ICML 2019), scored at its grown widths.

Each merged model is scored on the pooled validation and test splits (Dice, AUC, mAP@0.5, mean score). Seeds
change the sites' initial weights, their data order and the matching order; the data and its splits stay the
same, so the spread across seeds is the spread of training. Seed 0 trains exactly the ``independent`` variant
of :mod:`benchmarks.fl_comparison.one_shot`.

Decision rule written into the results: growth is worth keeping only if, on every seed, it beats fixed-width
matching on pooled-test mean score by more than the seed spread (the largest range across seeds of either
matching variant's pooled-test mean score).

Usage::

    python -m benchmarks.fl_comparison.growth_one_shot [--quick] [--seeds 0 1] [--epochs 10]
        [--results docs/results/growth_one_shot.json]
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from benchmarks.fl_comparison.common import (
    NUM_SITES,
    base_experiment,
    build_config,
    common_parser,
    headline,
    json_safe,
    log,
    machine_info,
    pooled_splits,
    site_splits,
    start,
    weighted_average,
)
from benchmarks.fl_comparison.one_shot import DATA_SEED_OFFSET, train_site
from mtmedformer.atomic import atomic_write_text
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.engine.loop import evaluate
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.models import build_model, fit_widths
from strategies.matching import ClientUpdate, MatchingConfig, build_spec, match_and_merge

MODELS = ("fedavg", "matching", "matching_growth")
COMMAND = "python -m benchmarks.fl_comparison.growth_one_shot"
# Seed s: site j starts from init seed train.seed + 10 s + j and reads its data in the order of seed 1000 + 10 s + j.
SEED_STRIDE = 10


def score(cfg: ExperimentConfig, state: dict[str, torch.Tensor], dataset: Dataset | None) -> dict[str, float | None]:
    """Headline metrics of ``state`` on ``dataset``; the model takes the state's (possibly grown) hidden widths."""
    if dataset is None or len(dataset) == 0:
        return {}
    model = build_model_and_loss(cfg).model
    fit_widths(model, state)
    model.load_state_dict(dict(state), strict=True)
    return headline(evaluate(model, make_loader(dataset, cfg, train=False), len(cfg.data.classes)))


def run_seed(cfg: ExperimentConfig, seed: int, sites: Sequence, pooled: dict, epochs: int) -> dict[str, Any]:
    """Train the sites of one seed, merge them three ways, score the merges."""
    trained = {}
    for j, site in enumerate(sites):
        init = cfg.train.seed + SEED_STRIDE * seed + j
        log.info("growth one-shot seed %d: training %s from init seed %d (%d epochs)", seed, site.name, init, epochs)
        trained[site.name] = train_site(cfg, site, epochs, init, DATA_SEED_OFFSET + SEED_STRIDE * seed + j)
    names = sorted(trained)
    updates = {
        n: ClientUpdate(trained[n]["state"], trained[n]["num_examples"], trained[n]["task_counts"]) for n in names
    }
    with torch.device("meta"):  # the spec needs module structure only
        spec = build_spec(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)))
    merged: dict[str, dict[str, torch.Tensor]] = {
        "fedavg": weighted_average([trained[n]["state"] for n in names], [trained[n]["num_examples"] for n in names])
    }
    merge_info: dict[str, dict[str, Any]] = {}
    for model_name, growth in (("matching", False), ("matching_growth", True)):
        began = time.monotonic()
        result = match_and_merge(updates, spec, previous=None, config=MatchingConfig(seed=seed, growth=growth))
        merged[model_name] = result.state_dict
        summary = result.diagnostics.summary()
        merge_info[model_name] = {
            "seconds": time.monotonic() - began,
            "grown_units": dict(result.diagnostics.grown),
            "grown_total": float(sum(result.diagnostics.grown.values())),
            "objective_gain": summary["matching/objective-gain"],
        }
        log.info("seed %d %s: %.1f s, %d grown units", seed, model_name, merge_info[model_name]["seconds"],
                 merge_info[model_name]["grown_total"])
    scores = {
        name: {"pooled_val": score(cfg, state, pooled.get("val")), "pooled_test": score(cfg, state, pooled.get("test"))}
        for name, state in merged.items()
    }
    return {
        "scores": scores,
        "merges": merge_info,
        "site_training": {
            n: {k: trained[n][k] for k in ("num_examples", "seconds", "final_loss")} for n in names
        },
    }


def decide(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-model mean and range of pooled-test mean score across seeds, growth minus fixed per seed, the verdict."""
    def test_mean(seed: str, model: str) -> float:
        value = per_seed[seed]["scores"][model]["pooled_test"].get("mean_score")
        return float("nan") if value is None else float(value)

    seeds = sorted(per_seed)
    by_model = {m: [test_mean(s, m) for s in seeds] for m in MODELS}
    summary = {m: {"mean": sum(v) / len(v), "range": max(v) - min(v)} for m, v in by_model.items()}
    spread = max(summary["matching"]["range"], summary["matching_growth"]["range"])
    gains = {s: test_mean(s, "matching_growth") - test_mean(s, "matching") for s in seeds}
    keep = all(g > spread for g in gains.values())
    return {
        "pooled_test_mean_score": summary,
        "growth_minus_fixed": gains,
        "seed_spread": spread,
        "rule": "keep growth iff growth_minus_fixed > seed_spread on every seed "
        "(seed_spread: largest range across seeds of either matching variant's pooled-test mean score)",
        "keep_growth": keep,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every seed and write the results JSON (atomically); return the results."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=None, help="local epochs per site (default 10; quick 1)")
    parser.add_argument("--results", default="docs/results/growth_one_shot.json", help="results JSON to write")
    args = parser.parse_args(argv)
    start(args)
    load_before = os.getloadavg()
    epochs = args.epochs or (1 if args.quick else 10)
    cfg = build_config(base_experiment(args.quick, args.cache_dir), federated={"partition": {"scheme": "site"}})
    sites = site_splits(cfg, NUM_SITES)
    pooled = pooled_splits(cfg)
    began = time.monotonic()
    per_seed = {str(seed): run_seed(cfg, seed, sites, pooled, epochs) for seed in args.seeds}
    results = {
        "command": " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"epochs": epochs, "seeds": args.seeds, "quick": args.quick, "config": to_dict(cfg),
                     "matching": {"fixed": repr(MatchingConfig()), "growth": repr(MatchingConfig(growth=True))}},
        "machine": machine_info(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "sites": {s.name: {k: len(getattr(s, k) or ()) for k in ("train", "val", "test")} for s in sites},
        "pooled": {k: len(v) for k, v in pooled.items()},
        "seeds": per_seed,
        "decision": decide(per_seed),
        "seconds": time.monotonic() - began,
    }
    path = Path(args.results)
    atomic_write_text(path, json.dumps(json_safe(results), indent=2) + "\n")
    log.info("growth one-shot done in %.1f min: %s; keep growth: %s", results["seconds"] / 60, path,
             results["decision"]["keep_growth"])
    return results


if __name__ == "__main__":
    main()
