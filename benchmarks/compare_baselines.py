"""Train MTMedFormer and its baselines on the same data with the same wall-clock budget; print a table.

Models (all trained centrally on the synthetic mammography set of ``--config``):
- ``mtmedformer``: the multi-task ViT (all three heads, hybrid loss);
- ``vit-<task>``: the same ViT trained on one task at a time (single-task baselines);
- ``cnn-multitask``: the ResNet-18 multi-task baseline with the same task heads.

Each gets ``--minutes`` of training (same threads, same data and split); the best checkpoint by validation
score is evaluated on the test split. Results: ``<out>/results.json`` and a Markdown table on stdout.

Usage: python -m benchmarks.compare_baselines [--config configs/centralized_mammography.yaml] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from mtmedformer import TASKS
from mtmedformer.config import load_config
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.trainer import fit
from mtmedformer.logs import setup_logging

COLUMNS = {
    "classification/auc": "AUC",
    "classification/accuracy": "acc",
    "segmentation/dice": "Dice",
    "segmentation/hd95": "HD95 px",
    "detection/map50": "mAP@0.5",
    "detection/map_rsna": "RSNA mAP",
}


def variants(base_overrides: list[str]) -> dict[str, list[str]]:
    """The compared models as config overrides."""
    out = {"mtmedformer": []}
    # a single task has nothing to share: no lesion descriptors (they need the segmentation head)
    out.update({f"vit-{t}": [f"model.tasks=[{t}]", "model.cls_descriptors=false"] for t in TASKS})
    out["cnn-multitask"] = ["model.arch=cnn"]
    return {name: base_overrides + extra for name, extra in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/centralized_mammography.yaml")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model")
    parser.add_argument("--out", default="runs/compare-baselines")
    parser.add_argument("--only", nargs="*", help="subset of model names")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    setup_logging(logging.INFO)
    out = Path(args.out)
    results = {}
    for name, overrides in variants(args.overrides).items():
        if args.only and name not in args.only:
            continue
        cfg = load_config(args.config, [*overrides, f"train.max_minutes={args.minutes}", "train.epochs=1000",
                                        f"train.output_dir={out / name}", "train.progress=false"])
        sets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
        start = time.monotonic()
        result = fit(cfg, sets["train"], sets.get("val"), sets.get("test"), overwrite=True)
        results[name] = {
            "test": result.test_metrics,
            "epochs": len(result.history.rows),
            "train_minutes": (time.monotonic() - start) / 60,
            "tasks": list(cfg.model.tasks),
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nTest split, best checkpoint by validation score, {args.minutes:g} min of training each:\n")
    print("| model | epochs | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, res in results.items():
        cells = []
        for key in COLUMNS:
            value = res["test"].get(key)
            cells.append("–" if value is None else f"{value:.3f}")
        print(f"| {name} | {res['epochs']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
