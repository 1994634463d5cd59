"""Does a self-supervised (SimMIM) start help within the fixed training budget? Same wall time, same seed.

Two arms of the shipped centralized config (``configs/centralized_mammography.yaml``, or ``--config``) on one
data set (``--set`` overrides, e.g. the converted mini-MIAS manifest):

- ``scratch``: supervised training from the random initialisation for ``--budget`` minutes (the shipped
  config's own run, so on a real set this arm is also the baseline of the shipped config there);
- ``mim``: ``--mim-minutes`` of SimMIM pre-training of the encoder on the training split's images
  (:mod:`mtmedformer.engine.mim`, labels unused), then supervised training from that encoder
  (``model.pretrained``) for the rest of the budget.

Each arm's validation-best checkpoint is evaluated on the test split by :func:`~mtmedformer.engine.trainer.fit`.
Arms can run as separate invocations (``--arm``) so that each holds the CPU lock for one arm; results merge
into one JSON file with the machine load before and after each arm.

Usage::

    flock /tmp/mtm-cpu.lock python -m benchmarks.real_data.mim_budget --arm scratch --name mini_mias \\
        --set data.source=manifest --set data.path=/work/data/mini-mias-512/manifest.csv
    flock /tmp/mtm-cpu.lock python -m benchmarks.real_data.mim_budget --arm mim --name mini_mias --set ...
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mtmedformer.atomic import atomic_write_json
from mtmedformer.config import load_config
from mtmedformer.data.sources import describe_records, load_records, make_datasets
from mtmedformer.engine.mim import MimConfig, pretrain
from mtmedformer.engine.trainer import fit
from mtmedformer.logs import setup_logging

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_CONFIG = REPO_ROOT / "configs" / "centralized_mammography.yaml"
RESULTS = REPO_ROOT / "docs" / "results"
_KEPT = ("classification/auc", "classification/sensitivity", "classification/specificity", "classification/n",
         "classification/threshold", "classification/sensitivity_at_threshold",
         "classification/specificity_at_threshold",
         "segmentation/dice", "segmentation/dice_lesion", "segmentation/n", "detection/map50", "detection/n_boxes",
         "mean_score")  # fmt: skip


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (other jobs on the machine change what a time budget buys)."""
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def kept_metrics(metrics: dict) -> dict:
    """The metrics the results files keep (None where a task is off)."""
    return {k: metrics.get(k) for k in _KEPT}


def run_arm(arm: str, config: Path, overrides: Sequence[str], budget: float, mim_minutes: float, work: Path) -> dict:
    """Run one arm and return its record (settings, load, MIM figures, best validation and test metrics)."""
    base = load_config(config, [*overrides, f"train.output_dir={work / arm}"])
    records = load_records(base.data)
    datasets = make_datasets(base.data, records, seed=base.train.seed)
    record: dict = {"arm": arm, "load_before": load_average(), "started": time.time()}
    extra: list[str] = [f"train.max_minutes={budget}"]
    if arm == "mim":
        mim = MimConfig(minutes=mim_minutes, lr=base.train.lr)
        result = pretrain(base, datasets["train"], work / "mim_encoder.pt", mim)
        record["mim"] = {"minutes": mim_minutes, "steps": result.steps, "epochs": result.epochs,
                         "seconds": result.seconds, "last_masked_l1": result.last_loss,
                         "mask_ratio": mim.mask_ratio, "mask_block": mim.mask_block, "lr": mim.lr}  # fmt: skip
        extra = [f"train.max_minutes={budget - result.seconds / 60.0}", f"model.pretrained={result.path}"]
    cfg = load_config(config, [*overrides, f"train.output_dir={work / arm}", *extra])
    fitted = fit(cfg, datasets["train"], datasets.get("val"), datasets.get("test"), overwrite=True)
    record.update(
        supervised_seconds=fitted.seconds,
        epochs=len(fitted.history.rows),
        val_best=kept_metrics(fitted.best_metrics),
        test=kept_metrics(fitted.test_metrics),
        val_auc_per_epoch=fitted.history.series("val/classification/auc"),
        load_after=load_average(),
        counts=describe_records(records),
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); writes ``docs/results/mim_<name>.json`` unless ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=("scratch", "mim", "both"), default="both")
    parser.add_argument("--name", required=True, help="results file docs/results/mim_<name>.json")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--budget", type=float, default=10.0, help="minutes per arm, MIM included (default 10)")
    parser.add_argument("--mim-minutes", type=float, default=3.0, help="SimMIM share of the mim arm (default 3)")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "mim-budget")
    parser.add_argument("--out", type=Path, help="results JSON (default docs/results/mim_<name>.json)")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    out = args.out or RESULTS / f"mim_{args.name}.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(
        command=" ".join(["python -m benchmarks.real_data.mim_budget", *sys.argv[1:]]) if argv is None else "",
        config=str(args.config.relative_to(REPO_ROOT) if args.config.is_relative_to(REPO_ROOT) else args.config),
        overrides=list(args.overrides),
        budget_minutes=args.budget,
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}; shared with other jobs, see load_*",
    )
    for arm in ("scratch", "mim") if args.arm == "both" else (args.arm,):
        results.setdefault("arms", {})[arm] = run_arm(
            arm, args.config, args.overrides, args.budget, args.mim_minutes, args.work / args.name
        )
        atomic_write_json(out, results)
    print(json.dumps({arm: r["test"] for arm, r in results["arms"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
