"""Shared pieces of the federated comparison: the experiment scale, data, evaluation, cost model and JSON output.

Every part of the comparison builds its :class:`~mtmedformer.config.ExperimentConfig` from
:func:`base_experiment`, so one-shot merging, iterative FL and the centralized / local-only bounds train the
same model on the same synthetic data (three mammography sites, partitioned by site or by Dirichlet label skew)
and are scored on the same pooled test split.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mtmedformer import TASKS
from mtmedformer.config import ExperimentConfig, config_from_dict, to_dict
from mtmedformer.config.loader import deep_merge
from mtmedformer.data.site import SiteData, simulated_site
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.local import train_locally
from mtmedformer.engine.loop import evaluate
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.logs import setup_logging

log = logging.getLogger("benchmarks.fl_comparison")

NUM_SITES = 3  # J: hospitals in every part of the comparison
TASK_METRIC: dict[str, str] = {
    # per task, the headline metric of the paper's comparison
    "segmentation": "segmentation/dice",
    "classification": "classification/auc",
    "detection": "detection/map50",
}
METRIC_LABEL: dict[str, str] = {"segmentation": "Dice", "classification": "AUC", "detection": "mAP@0.5"}
HEADLINE_KEYS: tuple[str, ...] = (*TASK_METRIC.values(), "mean_score")
SCORES: tuple[tuple[str, str], ...] = (*TASK_METRIC.items(), ("mean", "mean_score"))  # (column, metric key)
SCORE_LABEL: dict[str, str] = {**METRIC_LABEL, "mean": "mean"}  # column -> header


SCALES = ("documented", "learn")


def base_experiment(quick: bool, cache_dir: str | None = None, scale: str = "documented") -> dict[str, Any]:
    """The experiment shared by every part, as a plain config dict (``federated`` left to each part).

    Parameters
    ----------
    quick
        Smoke-test scale: 32 px images, 16 images per site, one transformer block, batch 8 (``scale`` ignored).
    cache_dir
        Where the synthetic set is generated and cached; None = the generator's default cache.
    scale
        ``"documented"``: the scale of ``docs/RESULTS.md``'s first measurement (64 px, 100 images per site,
        depth 4, patch 8, narrow decoders, batch 16, ``input_norm: none``). ``"learn"``: the model and data of
        the shipped centralized config (``configs/centralized_mammography.yaml``: 128 px, 400 images per site,
        ViT-Ti depth 12, patch 16, default decoders, descriptor probe, per-image standardization, batch 8,
        lr 3e-4, bf16, 2 threads), where centralized training learns every task; fixed task weights as in
        every part.

    Returns
    -------
    dict
        Sections ``data``, ``model``, ``loss``, ``train`` for :func:`mtmedformer.config.config_from_dict`.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if scale == "learn" and not quick:
        return _learn_experiment(cache_dir)
    size = 32 if quick else 64
    return {
        "data": {
            "source": "synthetic",
            "classes": ["benign", "malignant"],
            "image_size": size,
            # Off: augmentation costs ~30 % of a step on this CPU; every method sees the same images.
            "augment": False,
            "synthetic": {
                "modality": "mammography",
                "num_sites": NUM_SITES,
                "images_per_site": 16 if quick else 100,
                "image_size": size,
                "seed": 0,
                "cache_dir": cache_dir,
            },
        },
        "model": {
            "arch": "vit",
            "preset": "tiny",
            "patch_size": 8,
            "depth": 1 if quick else 4,
            # Decoder width unit 4 (default 16): the full-resolution UNETR decoder dominates the step time at 64 px.
            "seg_feature_size": 4,
            "detection": {
                "feature_size": 4,
                "stride": 8 if quick else 4,
                # Fewer NMS candidates (defaults 1000 / 100): MONAI's NMS loop dominated evaluation of barely
                # trained models; images hold at most a few lesions, so 20 detections per image lose nothing.
                "pre_nms_top_k": 100,
                "max_detections": 20,
            },
            "tasks": list(TASKS),
            # As measured for docs/RESULTS.md (before per-image standardization became the model default):
            # keeps the scripts reproducing that page. Set "image" to compare under the current default.
            "input_norm": "none",
        },
        # Fixed, equal task weights: every method optimises the same objective (learned weights would stay
        # site-local in FL and differ between methods).
        "loss": {"weighting": "fixed"},
        "train": {"batch_size": 8 if quick else 16, "lr": 5e-4, "threads": 1, "progress": False, "seed": 0},
    }


def _learn_experiment(cache_dir: str | None) -> dict[str, Any]:
    """The ``learn`` scale of :func:`base_experiment`."""
    return {
        "data": {
            "source": "synthetic",
            "classes": ["benign", "malignant"],
            "image_size": 128,
            "augment": False,  # as at the documented scale: every method sees the same images
            "synthetic": {
                "modality": "mammography",
                "num_sites": NUM_SITES,
                "images_per_site": 400,
                "image_size": 128,
                "seed": 0,
                "cache_dir": cache_dir,
            },
        },
        "model": {
            "arch": "vit",
            "preset": "tiny",
            "patch_size": 16,
            "tasks": list(TASKS),
            "cls_descriptors": True,
            "detection": {"pre_nms_top_k": 100, "max_detections": 20},
        },
        "loss": {"weighting": "fixed"},
        "train": {"batch_size": 8, "lr": 3e-4, "precision": "bf16", "threads": 2, "progress": False, "seed": 0},
    }


def build_config(base: Mapping[str, Any], **sections: Mapping[str, Any]) -> ExperimentConfig:
    """``base`` with ``sections`` merged in recursively, validated into an :class:`ExperimentConfig`.

    Raises
    ------
    ConfigError
        If a key or value is invalid (the message names the key path).
    """
    return config_from_dict(deep_merge(base, {k: dict(v) for k, v in sections.items()}))


def pooled_splits(cfg: ExperimentConfig) -> dict[str, Dataset]:
    """The pooled ``train``/``val``/``test`` datasets of every site (no augmentation on val/test)."""
    return make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)


def site_splits(cfg: ExperimentConfig, num_sites: int = NUM_SITES) -> list[SiteData]:
    """The ``num_sites`` partitions of ``cfg.federated.partition`` (what each simulated client trains on)."""
    return [simulated_site(cfg, i, num_sites) for i in range(num_sites)]


def evaluate_state(cfg: ExperimentConfig, state: Mapping[str, torch.Tensor], dataset: Dataset | None) -> dict[str, Any]:
    """Metrics of the model with weights ``state`` on ``dataset`` (empty dict when there is no dataset).

    A state dict without some task head (a model trained without that task) is evaluated on its own tasks;
    the missing tasks' metrics are absent.
    """
    if dataset is None or len(dataset) == 0:
        return {}
    heads = {key.split(".")[1] for key in state if key.startswith("heads.")}
    tasks = tuple(t for t in cfg.model.tasks if t in heads) or tuple(cfg.model.tasks)
    if tasks != tuple(cfg.model.tasks):
        cfg = build_config(to_dict(cfg), model={"tasks": list(tasks)})
    model = _model_for(cfg)
    model.load_state_dict(dict(state), strict=True)
    return evaluate(model, make_loader(dataset, cfg, train=False), len(cfg.data.classes))


@functools.lru_cache(maxsize=4)
def _model_for(cfg: ExperimentConfig) -> torch.nn.Module:
    # One model per config, reloaded for every evaluation: building it is slower than loading a state dict.
    return build_model_and_loss(cfg).model


def headline(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The per-task headline metrics (Dice, AUC, mAP@0.5) and ``mean_score``; None where undefined."""
    return {key: _finite_or_none(metrics.get(key)) for key in HEADLINE_KEYS}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """FedAvg of state dicts: ``sum_j w_j state_j / sum_j w_j`` per floating tensor (McMahan et al., 2017).

    Integer buffers are taken from the first state. Sums run in float64 and are cast back to each tensor's dtype.

    Raises
    ------
    ValueError
        If there are no states, the counts differ, a weight is negative or all weights are 0.
    """
    if not states or len(states) != len(weights):
        raise ValueError(f"need one weight per state, got {len(states)} states and {len(weights)} weights")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    merged: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if not first.is_floating_point():
            merged[name] = first.clone()
            continue
        acc = sum(float(w) * s[name].double() for s, w in zip(states, weights, strict=True))
        merged[name] = (acc / total).to(first.dtype)
    return merged


def condition_key(alpha: float | str, epochs: int, strategy: str) -> str:
    """Name of one (Dirichlet alpha, local epochs, strategy) condition of the iterative part, e.g.
    ``a0.1-e5-fedadam``: the stem of its run folders and its key in the ``tuning`` record."""
    return f"a{float(alpha):g}-e{int(epochs)}-{strategy}"


MOVED_KINDS: dict[str, str] = {
    # kind of permutation group -> the group-name pattern it covers (see strategies.matching.model_spec)
    "residual": "encoder.residual",
    "attention heads": ".attn.heads",
    "within-head q/k, v/o": ".attn.qk|.attn.vo",
    "MLP hidden": ".mlp",
    "decoder channels": "heads.",
}


def moved_by_kind(moved: Mapping[str, float]) -> dict[str, float]:
    """Mean moved fraction per kind of group (:data:`MOVED_KINDS`) from ``{group: fraction}`` diagnostics.

    Per-head entries (``...attn.qk[0]``) are left out: their group (``...attn.qk``) already counts them.
    """
    out: dict[str, float] = {}
    for kind, pattern in MOVED_KINDS.items():
        keys = [
            k
            for k in moved
            if "[" not in k and any((k.startswith(p) if p.endswith(".") else k.endswith(p)) for p in pattern.split("|"))
        ]
        if kind == "residual":
            keys = [k for k in moved if k == pattern]
        if keys:
            out[kind] = sum(float(moved[k]) for k in keys) / len(keys)
    return out


@dataclass(frozen=True)
class CostModel:
    """Measured seconds per image of one training step and of evaluation on this machine, for time estimates.

    Attributes
    ----------
    train_s_per_image
        Forward, loss, backward and optimizer step, per image, including data loading.
    eval_s_per_image
        Forward, metrics and box decoding, per image.
    """

    train_s_per_image: float
    eval_s_per_image: float

    def seconds(self, train_images: float, eval_images: float) -> float:
        """Estimated wall time of ``train_images`` training images and ``eval_images`` evaluated images."""
        return train_images * self.train_s_per_image + eval_images * self.eval_s_per_image


def measure_cost(cfg: ExperimentConfig, dataset: Dataset, steps: int = 2) -> CostModel:
    """Time ``steps`` training steps (after one warm-up step) and one evaluation pass of two batches."""
    torch.set_num_threads(cfg.train.threads or 1)
    seed_everything(cfg.train.seed)
    objects = build_model_and_loss(cfg)
    train_locally(objects.model, objects.loss_fn, dataset, cfg, epochs=1, seed=0, max_steps=1)  # warm-up
    timed = train_locally(objects.model, objects.loss_fn, dataset, cfg, epochs=steps, seed=1, max_steps=steps)
    train_cost = timed.seconds / max(sum(e.num_examples for e in timed.epochs), 1)
    subset = torch.utils.data.Subset(dataset, range(min(len(dataset), 2 * cfg.train.batch_size)))
    start = time.monotonic()
    evaluate(objects.model, make_loader(subset, cfg, train=False), len(cfg.data.classes))
    eval_cost = (time.monotonic() - start) / max(len(subset), 1)
    return CostModel(train_cost, eval_cost)


def train_images_per_round(sizes: Iterable[int], batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Images one round of local training processes over clients of ``sizes`` training images.

    Mirrors :func:`mtmedformer.engine.trainer.make_loader`: full batches only (``drop_last``) when a split has
    more than one batch, and the ``max_steps`` cap over all local epochs.
    """
    total = 0
    for n in sizes:
        per_epoch = n // batch_size if n > batch_size else 1
        steps = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
        total += steps * min(batch_size, n)
    return total


def machine_info() -> dict[str, Any]:
    """The machine and run conditions to report next to the results."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN/Inf become null), creating parent folders; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/Inf as None, tuples as lists, paths as strings and tensors as lists (what JSON keeps)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    return obj


def common_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """An argument parser with the flags of every part: ``--quick``, ``--out``, ``--cache-dir``, ``--estimate-only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke-test scale: 32 px, depth 1, 1 round, few images")
    parser.add_argument("--out", default=default_out, help="folder for runs and the part's results JSON")
    parser.add_argument("--cache-dir", default=None, help="synthetic data cache (default: the generator's cache)")
    parser.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    parser.add_argument(
        "--scale", choices=SCALES, default="documented", help="experiment scale (see base_experiment)"
    )
    return parser


def start(args: argparse.Namespace) -> Path:
    """Set one torch thread (OpenMP spin-waiting on a shared CPU makes more threads slower), logging, ``--out``."""
    torch.set_num_threads(1)
    setup_logging(logging.INFO)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def announce_estimate(part: str, seconds: float, detail: str) -> None:
    """Print the time estimate of a part before it starts (stdout, so it shows in any log capture)."""
    print(f"[{part}] estimated wall time: {seconds / 60:.1f} min ({detail})", flush=True)


@dataclass
class PartRun:
    """The results record of one part while it runs, saved to ``<out>/<part>.json`` after every finished step.

    Attributes
    ----------
    part
        The part's name, also the stem of its results file (``one_shot``, ``iterative``, ...).
    out
        The part's ``--out`` folder.
    results
        The record so far: ``settings`` and ``machine`` first, then whatever the part adds.
    began
        ``time.monotonic()`` when the part started measuring; ``results["seconds"]`` counts from here.
    """

    part: str
    out: Path
    results: dict[str, Any]
    began: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> Path:
        """The part's results JSON, ``<out>/<part>.json``."""
        return self.out / f"{self.part}.json"

    def save(self) -> Path:
        """Write the record with the seconds spent so far (an interrupted part leaves what it finished)."""
        self.results["seconds"] = time.monotonic() - self.began
        return write_json(self.path, self.results)

    def finish(self) -> dict[str, Any]:
        """Save the record, log the part's wall time and return the record."""
        self.save()
        log.info("%s done in %.1f min: %s", self.part, self.results["seconds"] / 60, self.path)
        return self.results


def settings_of(args: argparse.Namespace, names: Mapping[str, str]) -> dict[str, Any]:
    """The settings a part records: ``{key: args.<attribute>}`` for every ``key -> attribute`` of ``names``."""
    return {key: getattr(args, attribute) for key, attribute in names.items()}


def begin_part(
    part: str,
    args: argparse.Namespace,
    out: Path,
    estimate: tuple[float, str],
    settings: Mapping[str, Any],
    **extra: Any,
) -> PartRun | None:
    """Announce a part's time estimate and, unless ``--estimate-only`` was given, start its results record.

    Parameters
    ----------
    part
        The part's name (see :class:`PartRun`).
    args
        The part's parsed arguments (``estimate_only`` is read).
    out
        The part's ``--out`` folder.
    estimate
        ``(seconds, detail)``: the estimated wall time and what it covers, printed before anything trains.
    settings
        The part's settings, stored first in the record.
    extra
        More top-level entries of the record (after ``settings`` and ``machine``).

    Returns
    -------
    PartRun or None
        None with ``--estimate-only``: the caller returns ``{"estimate_s": seconds}`` without training.
    """
    seconds, detail = estimate
    announce_estimate(part, seconds, detail)
    if args.estimate_only:
        return None
    return PartRun(part, out, {"settings": dict(settings), "machine": machine_info(), **extra})
