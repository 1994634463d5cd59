"""Does neuron matching reduce to FedAvg after a shared initialisation and one short local epoch?

The design doc (``bnp-matching.md`` section 8) expects the best permutation to be the identity when clients
start from the same global model and take a few local steps, so that matching returns the FedAvg model.
This script measures it in the setting of the iterative comparison's first two rounds:

- ``round-1``: the 3 Dirichlet(``--alpha``) clients train one local epoch (at most ``--local-steps`` steps)
  from the seeded initial global model; the reference frame and prior centre is that initial model;
- ``round-2``: the same from the FedAvg of round 1 (a global model that has been trained once).

For each it reports the fraction of units matching moved per client and group, the distance between the
matched merge and FedAvg of the same updates relative to FedAvg's step from the reference, and the reference
tensors with the smallest mean square (the matching cost weighs each tensor by the inverse of its scale).

Usage::

    python -m benchmarks.fl_comparison.identity_check [--quick] [--out runs/fl-comparison]
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from benchmarks.fl_comparison.common import (
    NUM_SITES,
    base_experiment,
    begin_part,
    build_config,
    common_parser,
    log,
    measure_cost,
    site_splits,
    start,
    train_images_per_round,
    weighted_average,
)
from mtmedformer.config import ExperimentConfig
from mtmedformer.data.site import SiteData
from mtmedformer.engine.local import train_locally
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.models import build_model
from server.app import initial_state
from strategies.matching import ClientUpdate, MatchingConfig, build_spec, match_and_merge
from strategies.matching.permute import moved_fraction
from strategies.matching.posterior import tensor_scales


def _distance(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Euclidean distance over all floating tensors (float64)."""
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a if a[k].is_floating_point()))


def local_round(
    cfg: ExperimentConfig, sites: Sequence[SiteData], start_state: Mapping[str, torch.Tensor], steps: int, rnd: int
) -> dict[str, ClientUpdate]:
    """Every site trains one epoch (at most ``steps`` steps) from ``start_state``; return their updates."""
    updates = {}
    for j, site in enumerate(sites):
        objects = build_model_and_loss(cfg)
        objects.model.load_state_dict(dict(start_state))
        train_locally(objects.model, objects.loss_fn, site.train, cfg, epochs=1, seed=100 * rnd + j, max_steps=steps)
        state = {k: v.detach().clone() for k, v in objects.model.state_dict().items()}
        updates[site.name] = ClientUpdate(state, len(site.train), site.train.task_counts())
    return updates


def check(cfg: ExperimentConfig, updates: Mapping[str, ClientUpdate], previous: Mapping[str, torch.Tensor]) -> dict:
    """Match-and-merge vs FedAvg of ``updates`` with ``previous`` as reference and prior centre."""
    with torch.device("meta"):
        spec = build_spec(build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes)))
    names = sorted(updates)
    fedavg = weighted_average([updates[n].state for n in names], [updates[n].num_examples for n in names])
    began = time.monotonic()
    merged = match_and_merge(updates, spec, previous=previous, config=MatchingConfig())
    seconds = time.monotonic() - began
    step = _distance(fedavg, previous)
    gap = _distance(merged.state_dict, fedavg)
    scales = tensor_scales({k: v for k, v in previous.items() if v.is_floating_point()})
    smallest = sorted(scales.items(), key=lambda kv: kv[1])[:3]
    moved = {
        cid: {group: moved_fraction(perm) for group, perm in perms.items() if group.startswith("encoder.")}
        for cid, perms in merged.permutations.items()
    }
    return {
        "fedavg_step_norm": step,
        "matched_minus_fedavg_norm": gap,
        "relative_gap": gap / step if step > 0 else None,
        "moved_mean_encoder": {cid: sum(m.values()) / len(m) for cid, m in moved.items()},
        "moved_residual": {cid: m.get("encoder.residual", 0.0) for cid, m in moved.items()},
        "smallest_reference_scales": [{"tensor": k, "mean_square": v} for k, v in smallest],
        "matching_seconds": seconds,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both checks and write ``<out>/identity_check.json``; return the results."""
    parser = common_parser(__doc__.splitlines()[0], "runs/fl-comparison")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the clients (default 0.5)")
    parser.add_argument("--local-steps", type=int, default=None, help="cap on local steps (default 8; quick 2)")
    args = parser.parse_args(argv)
    out = start(args)
    steps = args.local_steps or (2 if args.quick else 8)
    partition = {"scheme": "dirichlet", "alpha": args.alpha, "seed": 0}
    cfg = build_config(base_experiment(args.quick, args.cache_dir, args.scale), federated={"partition": partition})
    sites = site_splits(cfg, NUM_SITES)
    cost = measure_cost(cfg, sites[0].train)
    images = train_images_per_round([len(s.train) for s in sites], cfg.train.batch_size, 1, steps)
    estimate = cost.seconds(2 * images, 0)
    detail = "2 rounds of one local epoch at 3 clients, plus 2 matchings"
    settings = {"alpha": args.alpha, "local_steps": steps, "quick": args.quick}
    run = begin_part("identity_check", args, out, (estimate, detail), settings)
    if run is None:
        return {"estimate_s": estimate}
    results = run.results
    init = initial_state(cfg).global_state
    round1 = local_round(cfg, sites, init, steps, 1)
    results["round-1"] = check(cfg, round1, init)
    names = sorted(round1)
    global1 = weighted_average([round1[n].state for n in names], [round1[n].num_examples for n in names])
    results["round-2"] = check(cfg, local_round(cfg, sites, global1, steps, 2), global1)
    for key in ("round-1", "round-2"):
        log.info(
            "identity check %s: |matched - fedavg| / |fedavg - previous| = %.3g, moved residual %s",
            key,
            results[key]["relative_gap"] or 0.0,
            results[key]["moved_residual"],
        )
    return run.finish()


if __name__ == "__main__":
    main()
