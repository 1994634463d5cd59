"""Centralized (or single-site local-only) training: epochs, validation, checkpoints, history and plots."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from mtmedformer.atomic import atomic_write_json, atomic_write_text
from mtmedformer.config import ExperimentConfig, to_dict
from mtmedformer.data.batch import collate_samples
from mtmedformer.engine.checkpoint import load_checkpoint, save_checkpoint
from mtmedformer.engine.device import resolve_device
from mtmedformer.engine.history import MetricHistory
from mtmedformer.engine.loop import evaluate, train_epoch
from mtmedformer.engine.optim import build_optimizer, build_scheduler
from mtmedformer.engine.plots import plot_history
from mtmedformer.engine.seeding import seed_everything, worker_seed
from mtmedformer.engine.setup import build_training_objects
from mtmedformer.errors import ConfigError
from mtmedformer.metrics import OperatingPoint

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` produced.

    Attributes
    ----------
    output_dir
        The run folder.
    best_metrics
        Validation metrics of the best epoch (by ``train.monitor``).
    test_metrics
        Test-split metrics of the best checkpoint, or empty when there is no test split.
    history
        One row per epoch.
    seconds
        Training wall time.
    """

    output_dir: Path
    best_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    history: MetricHistory
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def make_loader(
    dataset: Dataset, cfg: ExperimentConfig, *, train: bool, generator: torch.Generator | None = None
) -> DataLoader:
    """A DataLoader of :class:`~mtmedformer.data.batch.Batch` with the config's batch size and workers."""
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > cfg.train.batch_size,
        collate_fn=collate_samples,
        num_workers=cfg.data.num_workers,
        worker_init_fn=worker_seed if cfg.data.num_workers else None,
        generator=generator,
        persistent_workers=cfg.data.num_workers > 0,
    )


def _prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Make ``path`` an empty run folder; with ``overwrite``, an earlier run's files are moved aside first.

    An overwritten run must leave nothing behind: a ``best.pt`` the new run does not replace (no validation
    split, a misspelt ``train.monitor``) would otherwise be evaluated and reported as the new model.
    """
    holds_run = path.is_dir() and any(path.iterdir())
    if holds_run and not overwrite and any(path.glob("*.pt")):
        raise ConfigError(
            f"train.output_dir: {path} already holds a run (checkpoints found); choose another "
            "train.output_dir (e.g. --set train.output_dir=runs/new) or pass --overwrite"
        )
    if holds_run and overwrite:
        aside = path.with_name(f"{path.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
        suffix = 1
        while aside.exists():  # two overwrites within one second
            aside = aside.with_name(f"{path.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
            suffix += 1
        path.rename(aside)
        log.warning("--overwrite: the earlier run in %s was moved to %s; the new run starts empty", path, aside)
    path.mkdir(parents=True, exist_ok=True)


def chosen_operating_point(metrics: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The operating point a validation pass chose (see ``evaluate(choose_threshold=...)``), for a checkpoint.

    Returns ``{"threshold", "rule", "fallback"}``, or None when the pass chose none (no binary classification,
    no validation this epoch).
    """
    threshold = metrics.get("classification/threshold")
    if threshold is None:
        return None
    fallback = bool(metrics.get("classification/threshold_fallback"))
    rule = "fixed" if fallback else cfg.train.operating_point.rule
    return OperatingPoint(float(threshold), rule, fallback).as_dict()


def fit(
    cfg: ExperimentConfig,
    train_set: Dataset,
    val_set: Dataset | None = None,
    test_set: Dataset | None = None,
    *,
    overwrite: bool = False,
) -> FitResult:
    """Train a model as ``cfg`` says and write the run to ``cfg.train.output_dir``.

    The run folder receives ``config.yaml`` (the resolved config), ``history.json``/``history.csv``
    (one row per epoch), ``last.pt`` and ``best.pt`` (atomic, each carrying the config), ``metrics_val.json``,
    ``metrics_test.json`` (best checkpoint on the test split) and PNG plots.

    Binary classification: every validation pass chooses the class-1 probability threshold on the validation
    split (``train.operating_point``) and reports the metrics at it (``classification/*_at_threshold``) beside
    the argmax ones; the checkpoints store it and the test split is scored at the threshold stored in
    ``best.pt``, never at one chosen on the test split.

    Raises
    ------
    ConfigError
        If the output folder already holds a run and ``overwrite`` is false, or an enabled task has no
        annotated training sample. With ``overwrite`` the earlier run's folder is renamed to
        ``<output_dir>.previous-<timestamp>`` (logged), so the new run starts from an empty folder.
    """
    out = Path(cfg.train.output_dir)
    _prepare_output_dir(out, overwrite)
    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    generator = seed_everything(cfg.train.seed)
    objects = build_training_objects(cfg, train_set)
    device = resolve_device(cfg.train.device)
    model, loss_fn = objects.model.to(device), objects.loss_fn.to(device)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))

    train_loader = make_loader(train_set, cfg, train=True, generator=generator)
    val_loader = make_loader(val_set, cfg, train=False) if val_set is not None and len(val_set) else None
    optimizer = build_optimizer({"model": model, "loss": loss_fn}, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * max(1, len(train_loader)))
    num_classes = len(cfg.data.classes)
    start = time.monotonic()
    deadline = start + 60.0 * cfg.train.max_minutes if cfg.train.max_minutes else None
    history = MetricHistory()
    best_score: float | None = None
    best_metrics: dict[str, Any] = {}
    log.info(
        "training %s (%s, %d parameters) on %d images for %d epochs on %s; tasks %s",
        cfg.model.arch,
        cfg.model.preset,
        sum(p.numel() for p in model.parameters()),
        len(train_set),
        cfg.train.epochs,
        device,
        ", ".join(model.tasks),
    )
    for epoch in range(1, cfg.train.epochs + 1):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)  # fresh, seeded augmentations every epoch
        result = train_epoch(
            model,
            loss_fn,
            train_loader,
            optimizer,
            scheduler,
            grad_clip=cfg.train.grad_clip,
            deadline=deadline,
            progress=cfg.train.progress,
            desc=f"epoch {epoch}",
            precision=cfg.train.precision,
        )
        row: dict[str, Any] = {
            "epoch": epoch,
            "train/loss": result.loss,
            **{f"train/{t}/loss": v for t, v in result.task_losses.items()},
            "lr": scheduler.get_last_lr()[0],
            "time/epoch_s": result.seconds,
            "time/elapsed_s": time.monotonic() - start,
            "train/images_per_s": result.num_examples / max(result.seconds, 1e-9),
        }
        if result.probe_loss is not None:  # the descriptor probe's fit after this epoch
            row["train/classification/probe_loss"] = result.probe_loss
        last = epoch == cfg.train.epochs or result.budget_reached
        metrics: dict[str, Any] = {}
        if val_loader is not None and (epoch % cfg.train.eval_every == 0 or last):
            metrics = evaluate(
                model, val_loader, num_classes, loss_fn=loss_fn, progress=cfg.train.progress,
                choose_threshold=cfg.train.operating_point,
            )
            row.update({f"val/{k}": v for k, v in metrics.items()})
        history.append(row)
        history.write(out / "history.json", out / "history.csv")
        common = {
            "config": cfg, "model": model, "loss_fn": loss_fn, "epoch": epoch,
            "operating_point": chosen_operating_point(metrics, cfg),  # None without validation this epoch
        }
        save_checkpoint(out / "last.pt", **common, metrics=metrics, optimizer=optimizer, scheduler=scheduler)
        score = metrics.get(cfg.train.monitor) if metrics else None
        if score is not None and (best_score is None or score > best_score):
            best_score, best_metrics = float(score), dict(metrics)
            save_checkpoint(out / "best.pt", **common, metrics=metrics)
        log.info(
            "epoch %d/%d  loss %.4f  %s  %.1f img/s  elapsed %.0fs",
            epoch,
            cfg.train.epochs,
            result.loss,
            "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and "/n" not in k),
            row["train/images_per_s"],
            row["time/elapsed_s"],
        )
        if result.budget_reached:
            log.info("time budget of %.1f min reached after %d epochs", cfg.train.max_minutes, epoch)
            break
    seconds = time.monotonic() - start
    if not (out / "best.pt").exists():  # no validation split: the last model is the one to use
        save_checkpoint(out / "best.pt", config=cfg, model=model, loss_fn=loss_fn, epoch=epoch, metrics={})
    test_metrics: dict[str, Any] = {}
    if test_set is not None and len(test_set):
        best = load_checkpoint(out / "best.pt")
        model.load_state_dict(best.model_state)
        test_metrics = evaluate(
            model, make_loader(test_set, cfg, train=False), num_classes, loss_fn=loss_fn,
            threshold=best.classification_threshold(),  # chosen on validation (or the fixed one)
        )
        atomic_write_json(out / "metrics_test.json", test_metrics)
    atomic_write_json(out / "metrics_val.json", best_metrics)
    plots = plot_history(history, out)
    files = {"best": out / "best.pt", "last": out / "last.pt", "history": out / "history.json"}
    files.update({p.stem: p for p in plots})
    return FitResult(out, best_metrics, test_metrics, history, seconds, files)
