"""The ``mtmedformer`` command line: synthetic data, data checks, training and evaluation.

Each subcommand reads its settings once (config file + ``--set`` overrides), turns every user-input
problem into one clear line on stderr and exit status 2, and leaves the work to library functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mtmedformer.errors import MTMedFormerError
from mtmedformer.logs import setup_logging

log = logging.getLogger("mtmedformer")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="experiment YAML (see configs/); defaults apply when omitted")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=3 (repeatable)",
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    from mtmedformer.config import load_config
    from mtmedformer.data.synthetic import generate_synthetic, synthetic_manifest

    cfg = load_config(args.config, args.overrides).data.synthetic
    manifest = generate_synthetic(cfg, args.out) if args.out else synthetic_manifest(cfg)
    print(manifest)
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from mtmedformer.config import load_config
    from mtmedformer.data.decode_check import decode_records
    from mtmedformer.data.sources import describe_records, load_records

    cfg = load_config(args.config, args.overrides)
    records = load_records(cfg.data)
    decoded = decode_records(records, cfg.data, progress=cfg.train.progress)  # every image and mask, once
    print(json.dumps(describe_records(decoded.records), indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from mtmedformer.config import load_config
    from mtmedformer.data.sources import load_records, make_datasets
    from mtmedformer.engine.trainer import fit

    cfg = load_config(args.config, args.overrides)
    datasets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    if "train" not in datasets:
        raise MTMedFormerError("the data has no training split: check data.val_fraction/test_fraction and 'split'")
    result = fit(cfg, datasets["train"], datasets.get("val"), datasets.get("test"), overwrite=args.overwrite)
    print(f"run folder: {result.output_dir}")
    for name, metrics in (("validation (best)", result.best_metrics), ("test (best checkpoint)", result.test_metrics)):
        if metrics:
            shown = {k: v for k, v in metrics.items() if v is not None and not k.endswith("/n")}
            print(f"{name}: " + ", ".join(f"{k}={v:.3f}" for k, v in shown.items() if isinstance(v, float)))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from mtmedformer.config import load_config
    from mtmedformer.data.sources import load_records, make_datasets
    from mtmedformer.engine.mim import MimConfig, pretrain

    cfg = load_config(args.config, args.overrides)
    mim = MimConfig(minutes=args.minutes, mask_ratio=args.mask_ratio, mask_block=args.mask_block, lr=args.lr)
    datasets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    if "train" not in datasets:
        raise MTMedFormerError("the data has no training split to pre-train on: check data.val_fraction/test_fraction")
    result = pretrain(cfg, datasets["train"], args.out, mim)
    print(f"encoder: {result.path} ({result.steps} steps, {result.epochs} epochs, {result.seconds:.0f} s, "
          f"masked-patch L1 {result.last_loss:.4f}); start training from it with --set model.pretrained={result.path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mtmedformer.atomic import atomic_write_json
    from mtmedformer.data.dataset import MedicalImageDataset
    from mtmedformer.data.manifest import read_manifest
    from mtmedformer.engine.checkpoint import load_checkpoint, load_model_state
    from mtmedformer.engine.device import resolve_device
    from mtmedformer.engine.loop import evaluate
    from mtmedformer.engine.setup import build_model_and_loss
    from mtmedformer.engine.trainer import make_loader

    ckpt = load_checkpoint(args.checkpoint)
    cfg = ckpt.config
    threshold = ckpt.classification_threshold()  # chosen on validation when training stored one
    if args.threshold is not None:
        if not 0.0 < args.threshold < 1.0:  # also refuses nan
            raise MTMedFormerError(f"--threshold: must be a class-1 probability in (0, 1), got {args.threshold}")
        if threshold is None:
            raise MTMedFormerError(
                f"--threshold: {args.checkpoint} has no binary classification head (model.tasks="
                f"{list(cfg.model.tasks)}, data.classes={list(cfg.data.classes)}); drop --threshold"
            )
        threshold = args.threshold
    objects = build_model_and_loss(cfg)
    load_model_state(ckpt, objects.model, objects.loss_fn)
    device = resolve_device(cfg.train.device)
    objects.model.to(device)
    objects.loss_fn.to(device)
    records = read_manifest(args.data, cfg.data.classes, on_bad_row=cfg.data.on_bad_row).records
    if args.split:
        records = [r for r in records if r.split == args.split]
        if not records:
            raise MTMedFormerError(f"{args.data} has no rows with split '{args.split}'; drop --split to use all rows")
    dataset = MedicalImageDataset(
        records, cfg.data.classes, cfg.data.image_size, window=cfg.data.window_percentiles,
        max_image_pixels=cfg.data.max_image_pixels, skip_undecodable=cfg.data.on_bad_row == "skip",
    )
    metrics = evaluate(objects.model, make_loader(dataset, cfg, train=False), len(cfg.data.classes),
                       loss_fn=objects.loss_fn, threshold=threshold)
    output = args.output or Path(args.checkpoint).with_name(f"metrics_{Path(args.data).stem}.json")
    atomic_write_json(output, {"checkpoint": str(args.checkpoint), "data": str(args.data), "metrics": metrics})
    print(json.dumps(metrics, indent=2))
    print(f"written: {output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mtmedformer`` command."""
    parser = argparse.ArgumentParser(prog="mtmedformer", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write (or find in the cache) a synthetic multi-site data set")
    _add_config_args(synth)
    synth.add_argument("--out", type=Path, help="write here instead of the cache (settings: data.synthetic.*)")
    synth.set_defaults(func=_cmd_synth)

    check = sub.add_parser(
        "check-data", help="read and validate the configured data set, decode every image and mask, print its counts"
    )
    _add_config_args(check)
    check.set_defaults(func=_cmd_check_data)

    train = sub.add_parser("train", help="centralized (or one site's local-only) training")
    _add_config_args(train)
    train.add_argument(
        "--overwrite", action="store_true",
        help="start afresh in a train.output_dir that holds a run (its files move to <dir>.previous-<time>)",
    )
    train.set_defaults(func=_cmd_train)

    pre = sub.add_parser("pretrain", help="self-supervised (SimMIM) pre-training of the ViT encoder on the train split")
    _add_config_args(pre)
    pre.add_argument("--out", type=Path, required=True, help="encoder checkpoint to write (.pt), for model.pretrained")
    pre.add_argument("--minutes", type=float, default=3.0, help="wall-clock budget (default 3)")
    pre.add_argument("--mask-ratio", type=float, default=0.6, help="share of mask blocks hidden (default 0.6)")
    pre.add_argument("--mask-block", type=int, default=32, help="mask block side in pixels (default 32)")
    pre.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (default 3e-4)")
    pre.set_defaults(func=_cmd_pretrain)

    ev = sub.add_parser("evaluate", help="evaluate a checkpoint on a manifest CSV")
    ev.add_argument("--checkpoint", type=Path, required=True, help="best.pt or last.pt of a run")
    ev.add_argument("--data", type=Path, required=True, help="manifest CSV (see README)")
    ev.add_argument("--split", choices=("train", "val", "test"), help="only rows of this split")
    ev.add_argument("--output", type=Path, help="metrics JSON path (default: next to the checkpoint)")
    ev.add_argument(
        "--threshold", type=float,
        help="binary classification: class-1 probability threshold in (0, 1) to score at, instead of the one "
        "the checkpoint stores (chosen on the validation split)",
    )
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args))
    except MTMedFormerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
