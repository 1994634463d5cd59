"""The gap between real and synthetic images: the shipped centralized config and variants, side by side.

Every arm trains ``configs/centralized_mammography.yaml`` (or ``--config``) for its 10-minute budget
(``train.max_minutes`` of the config) with the arm's overrides, on one data set, and records the test metrics
of the validation-best checkpoint (:func:`~mtmedformer.engine.trainer.fit`), the epochs it ran and the machine
load around it. Arms, in the order they are meant to run (later arms may start from an earlier arm's
checkpoint):

``synthetic``
    the shipped config on its own synthetic set: the synthetic column of the table, and the source of the
    transfer arms' encoder.
``mias``
    the shipped config on mini-MIAS as converted in ``docs/real-data.md`` (whole films, 512 px files, trained
    at 128 px): the starting point on real images.
``mias_crop``
    the films cropped to the breast (``--crop-breast`` of :mod:`benchmarks.real_data.mini_mias`): lesions
    about 1.8x wider at the same input size.
``mias_crop_256``
    cropped, trained at 256 px (4x the tokens per image, so fewer epochs in the same budget).
``kermany`` / ``mias_crop_from_kermany``
    the shipped config on the Kermany chest X-rays (native loader; classification only, as the set has no
    masks or boxes), and the cropped mini-MIAS arm started from that encoder: transfer between two real sets.
``mias_crop_finetune_synthetic``
    the cropped arm started from the whole ``synthetic`` model, task heads included
    (``model.pretrained_heads``): fine-tuning a model that already segments and detects phantom lesions.
``mias_crop_finetune_synthetic_lesion``
    the same, with the best epoch chosen by the validation Dice on lesion images instead of ``mean_score``:
    two thirds of the mini-MIAS films are normal, where an empty prediction scores Dice 1, so the overall Dice
    (and ``mean_score``) rewards predicting nothing.
``synthetic_budget`` / ``mias_crop_budget``
    the cosine learning-rate decay spread over the 10-minute budget (``train.schedule_over: budget``) instead
    of over the config's 40 epochs, of which the budget allows far fewer (so the shipped schedule never
    anneals).
``mias_crop_from_synthetic`` / ``mias_crop_256_from_synthetic``
    as the arm without the suffix, with the encoder started from the ``synthetic`` arm's ``best.pt``
    (``model.pretrained``; position embedding resampled when the size differs): the transfer gain, measured
    against the same arm from scratch.

The converted sets are looked up under ``--real-data`` (``mini-mias-512/`` and ``mini-mias-crop512/``, as
written by the converter commands in ``docs/real-data.md``); a missing one stops with the command that makes it.
Results merge into ``docs/results/real_gap.json`` (one invocation per arm keeps each arm under the CPU lock);
``python -m benchmarks.real_data.report`` turns them into the table of ``docs/real-data.md``.

Usage::

    flock /tmp/mtm-cpu.lock python -m benchmarks.real_data.gap --real-data /work/data --arm synthetic
    flock /tmp/mtm-cpu.lock python -m benchmarks.real_data.gap --real-data /work/data --arm mias_crop
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.real_data.mim_budget import DEFAULT_CONFIG, REPO_ROOT, RESULTS, kept_metrics, load_average
from mtmedformer.atomic import atomic_write_json
from mtmedformer.config import load_config
from mtmedformer.data.sources import describe_records, load_records, make_datasets
from mtmedformer.engine.trainer import fit
from mtmedformer.errors import DataError
from mtmedformer.logs import setup_logging

OUT = RESULTS / "real_gap.json"
CONVERT = "python -m benchmarks.real_data.mini_mias --src <mini-mias> --out {path} --size 512{crop}"


@dataclass(frozen=True)
class Arm:
    """One row of the table: which data set, which overrides, and whose encoder it starts from."""

    data: str  # "synthetic" or the converted folder's name under --real-data
    overrides: tuple[str, ...] = ()
    pretrained_from: str | None = None  # another arm whose best.pt starts the encoder
    what: str = ""
    baseline: str | None = None  # the arm from scratch this transfer arm is compared with


_CROP = "mini-mias-crop512"
_BUDGET = "train.schedule_over=budget"
_HEADS = "model.pretrained_heads=true"
# Kermany has class labels only: the dense heads and the descriptor probe (which reads the masks) are off
_KERMANY = ("data.classes=[normal,pneumonia]", "model.tasks=[classification]", "model.cls_descriptors=false")
ARMS: dict[str, Arm] = {
    "synthetic": Arm("synthetic", what="shipped config, synthetic set"),
    "mias": Arm("mini-mias-512", what="shipped config, whole films"),
    "mias_crop": Arm(_CROP, what="films cropped to the breast"),
    "mias_crop_256": Arm(_CROP, ("data.image_size=256",), what="cropped, 256 px input"),
    "mias_crop_from_synthetic": Arm(_CROP, pretrained_from="synthetic", what="cropped, encoder from synthetic",
                                    baseline="mias_crop"),
    "mias_crop_finetune_synthetic": Arm(_CROP, (_HEADS,), pretrained_from="synthetic", baseline="mias_crop",
                                        what="cropped, whole model (encoder and heads) from synthetic"),
    "kermany": Arm("kermany", _KERMANY, what="Kermany chest X-rays, classification only"),
    "mias_crop_from_kermany": Arm(_CROP, pretrained_from="kermany", what="cropped, encoder from Kermany",
                                  baseline="mias_crop"),
    "mias_crop_finetune_synthetic_lesion": Arm(
        _CROP, (_HEADS, "train.monitor=segmentation/dice_lesion"), pretrained_from="synthetic",
        what="cropped, whole model from synthetic, best epoch by validation lesion-image Dice",
    ),
    "synthetic_budget": Arm("synthetic", (_BUDGET,), what="synthetic, cosine over the 10-minute budget"),
    "mias_crop_budget": Arm(_CROP, (_BUDGET,), what="cropped, cosine over the 10-minute budget"),
    "mias_crop_256_from_synthetic": Arm(
        _CROP, ("data.image_size=256",), pretrained_from="synthetic", what="cropped, 256 px, encoder from synthetic",
        baseline="mias_crop_256",
    ),
}


def arm_overrides(name: str, real_data: Path | None, work: Path) -> list[str]:
    """The ``--set`` overrides that put the arm ``name`` on its data and start (source checkpoints under ``work``).

    Raises
    ------
    DataError
        If the arm needs a converted set that is not under ``real_data``, or an arm's checkpoint it starts
        from does not exist yet.
    """
    arm = ARMS[name]
    overrides: list[str] = []
    if arm.data != "synthetic" and real_data is None:
        raise DataError(f"this arm trains on {arm.data}: pass --real-data, the folder that holds it")
    if arm.data == "kermany":
        folder = real_data / "kermany"
        if not (folder / "chest_xray").is_dir():
            raise DataError("no chest_xray/ here; fetch the set as docs/real-data.md says", path=folder)
        overrides += ["data.source=kermany", f"data.path={folder}"]
    elif arm.data != "synthetic":
        manifest = real_data / arm.data / "manifest.csv"
        if not manifest.is_file():
            crop = " --crop-breast" if "crop" in arm.data else ""
            raise DataError(f"not converted yet; run {CONVERT.format(path=manifest.parent, crop=crop)}", path=manifest)
        overrides += ["data.source=manifest", f"data.path={manifest}"]
    if arm.pretrained_from is not None:
        source = work / arm.pretrained_from / "best.pt"
        if not source.is_file():
            raise DataError(f"run the arm {arm.pretrained_from!r} first: this arm starts from its encoder", path=source)
        overrides.append(f"model.pretrained={source}")
    return [*overrides, *arm.overrides, "train.progress=false"]


def record_name(arm: str, seed: int) -> str:
    """The arm's key in the results (and its run folder): ``<arm>`` for seed 0, ``<arm>@seed<N>`` otherwise."""
    return arm if seed == 0 else f"{arm}@seed{seed}"


def base_arm(name: str) -> str:
    """The :data:`ARMS` key of a results key (``mias_crop@seed1`` -> ``mias_crop``)."""
    return name.split("@", 1)[0]


def run_arm(
    name: str, config: Path, real_data: Path | None, work: Path, extra: Sequence[str] = (), seed: int = 0
) -> dict:
    """Train one arm and return its record (overrides, counts, load, epochs, best validation and test metrics).

    ``extra`` overrides come after the arm's own (so they win), e.g. thread counts or a smaller model in tests.
    ``seed`` is ``train.seed`` (initial weights, data order, augmentation; the patient-level split keeps
    ``data.split_seed``); a transfer arm still starts from its source arm's seed-0 checkpoint.
    """
    arm = ARMS[name]
    overrides = [*arm_overrides(name, real_data, work), *extra, f"train.seed={seed}",
                 f"train.output_dir={work / record_name(name, seed)}"]  # fmt: skip
    cfg = load_config(config, overrides)
    records = load_records(cfg.data)
    datasets = make_datasets(cfg.data, records, seed=cfg.train.seed)
    record: dict = {"what": arm.what, "data": arm.data, "overrides": [*arm.overrides],
                    "pretrained_from": arm.pretrained_from, "baseline": arm.baseline, "load_before": load_average(),
                    "started": time.time(), "seed": seed}  # fmt: skip
    fitted = fit(cfg, datasets["train"], datasets.get("val"), datasets.get("test"), overwrite=True)
    record.update(
        seconds=fitted.seconds,
        epochs=len(fitted.history.rows),
        image_size=cfg.data.image_size,
        val_best=kept_metrics(fitted.best_metrics),
        val_lesion_dice_per_epoch=fitted.history.series("val/segmentation/dice_lesion"),
        val_auc_per_epoch=fitted.history.series("val/classification/auc"),
        test=kept_metrics(fitted.test_metrics),
        load_after=load_average(),
        counts=describe_records(records),
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); exit status 2 on missing data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", choices=sorted(ARMS), help="arm to run (repeat; default all)")
    parser.add_argument("--real-data", type=Path, help="folder with the converted mini-MIAS sets")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every arm, after the arm's own")
    parser.add_argument("--seed", type=int, default=0, help="train.seed; results key <arm>@seed<N> unless 0")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "real-gap")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.update(
        config=str(args.config.relative_to(REPO_ROOT) if args.config.is_relative_to(REPO_ROOT) else args.config),
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}; see load_* per arm",
    )
    for name in args.arm or list(ARMS):
        try:
            record = run_arm(name, args.config, args.real_data, args.work, args.overrides, args.seed)
            key = record_name(name, args.seed)
            results.setdefault("arms", {})[key] = {**record, "extra_overrides": list(args.overrides)}
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        atomic_write_json(args.out, results)
    print(json.dumps({name: r["test"] for name, r in results["arms"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
