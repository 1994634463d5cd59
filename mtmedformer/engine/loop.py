"""One training epoch and one evaluation pass: the functions both centralized and federated training call."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mtmedformer.config.train import OperatingPointConfig
from mtmedformer.data.batch import Batch
from mtmedformer.engine.device import map_tensors, module_device
from mtmedformer.engine.probe import ProbeFitter
from mtmedformer.metrics import MultiTaskEvaluator, choose_operating_point

log = logging.getLogger(__name__)

PRIMARY_METRICS: dict[str, tuple[str, ...]] = {
    # per task, the metric that summarises it, with fallbacks when the first is undefined on a split
    "classification": ("classification/auc", "classification/accuracy"),
    "segmentation": ("segmentation/dice",),
    "detection": ("detection/map50",),
}


@dataclass
class EpochResult:
    """What one pass of local training did.

    Attributes
    ----------
    loss
        Mean total (weighted) loss over the steps.
    task_losses
        Per task, the mean of its loss over the samples annotated for it.
    task_counts
        Per task, how many training samples carried its annotation (what the task head learned from).
    num_examples
        Samples seen (images, not batches).
    num_steps
        Optimisation steps taken.
    seconds
        Wall time of the pass.
    budget_reached
        True when the pass stopped early because the time budget ran out.
    probe_loss
        Training cross-entropy (nats) of the classifier's descriptor probe refitted after the pass, or None when
        the model has none or it was not refitted (see :mod:`mtmedformer.engine.probe`).
    """

    loss: float
    task_losses: dict[str, float] = field(default_factory=dict)
    task_counts: dict[str, int] = field(default_factory=dict)
    num_examples: int = 0
    num_steps: int = 0
    seconds: float = 0.0
    budget_reached: bool = False
    probe_loss: float | None = None


def _grad_is_finite(params: Iterable[nn.Parameter]) -> bool:
    return all(p.grad is None or torch.isfinite(p.grad).all() for p in params)


def as_float32(outputs: Any) -> Any:
    """Cast every floating tensor in a (nested) model output to float32, so the loss is computed in fp32."""
    return map_tensors(lambda t: t.float() if t.is_floating_point() else t, outputs)


def autocast_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass: ``"bf16"`` autocasts, ``"fp32"`` does nothing.

    bf16 autocast runs matrix products and convolutions in bfloat16 (on CPUs with AMX or AVX512-BF16 about
    twice as fast, with lower activation memory) while weights, optimizer state and the loss stay float32.
    bfloat16 keeps float32's exponent range, so no loss scaling is needed.

    Raises
    ------
    ValueError
        If ``precision`` is neither ``"fp32"`` nor ``"bf16"``.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    grad_clip: float | None = None,
    deadline: float | None = None,
    max_steps: int | None = None,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    progress: bool = False,
    desc: str = "train",
    precision: str = "fp32",
) -> EpochResult:
    """Train ``model`` for one pass over ``loader``.

    Parameters
    ----------
    model
        Multi-task model; ``model(image)`` returns a dict of task outputs.
    loss_fn
        :class:`~mtmedformer.losses.HybridLoss`: ``loss_fn(outputs, batch)`` returns total, per-task losses and
        per-task annotated counts.
    loader
        Yields :class:`~mtmedformer.data.batch.Batch`.
    optimizer, scheduler
        Stepped once per batch (the scheduler after the optimizer).
    grad_clip
        Max global gradient norm, or None.
    deadline
        ``time.monotonic()`` value after which the pass stops (time-budgeted training).
    max_steps
        Stop after this many steps (None = whole pass).
    extra_loss
        Called every step and added to the loss, e.g. FedProx's proximal term (Li et al., MLSys 2020).
    progress
        Show a progress bar.
    desc
        Progress bar label.
    precision
        ``"fp32"`` or ``"bf16"`` (forward pass under bfloat16 autocast, loss in float32; see
        :func:`autocast_context`).

    Batches are moved to the model's device (see ``train.device``).

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite: lower the learning rate or check the data.
    """
    model.train()
    loss_fn.train()
    start = time.monotonic()
    total, steps, examples = 0.0, 0, 0
    task_sum: dict[str, float] = {}
    task_n: dict[str, int] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    result_budget = False
    device = module_device(model)
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    probe = ProbeFitter.for_model(model)  # a descriptor probe is refitted on this pass (engine/probe.py)
    try:
        for batch in bar:
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if out_of_time or (max_steps is not None and steps >= max_steps):
                result_budget = out_of_time
                break
            batch = batch.to(device)
            with autocast_context(precision, batch.image.device):
                outputs = model(batch.image)
            if probe is not None:
                probe.observe(batch)
            out = loss_fn(as_float32(outputs), batch)
            if not torch.isfinite(out.total):
                raise FloatingPointError(
                    f"training loss became {out.total.item()} at step {steps} (per task: "
                    f"{ {k: float(v) for k, v in out.per_task.items()} }); lower train.lr or check the data"
                )
            loss = out.total + extra_loss() if extra_loss is not None else out.total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if not _grad_is_finite(params):
                log.warning("non-finite gradient at step %d: step skipped", steps)
                continue
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            steps += 1
            examples += len(batch)
            total += float(out.total.detach())
            for task, value in out.per_task.items():
                n = int(out.counts.get(task, 0))
                if n:
                    task_sum[task] = task_sum.get(task, 0.0) + float(value) * n
                    task_n[task] = task_n.get(task, 0) + n
            bar.set_postfix(loss=f"{total / steps:.4f}")
    finally:
        if probe is not None:
            probe.close()
    probe_loss = probe.fit() if probe is not None else None
    return EpochResult(
        loss=total / max(steps, 1),
        task_losses={t: task_sum[t] / task_n[t] for t in task_sum},
        task_counts=task_n,
        num_examples=examples,
        num_steps=steps,
        seconds=time.monotonic() - start,
        budget_reached=result_budget,
        probe_loss=probe_loss,
    )


def primary_score(metrics: dict[str, float | None], tasks: Iterable[str]) -> float | None:
    """Mean over ``tasks`` of each task's summary metric (Dice, AUC, mAP@0.5); undefined tasks are left out."""
    values = []
    for task in tasks:
        for key in PRIMARY_METRICS[task]:
            value = metrics.get(key)
            if value is not None:
                values.append(float(value))
                break
    return sum(values) / len(values) if values else None


def _at_chosen_threshold(evaluator: MultiTaskEvaluator, choose: OperatingPointConfig) -> dict[str, float | None]:
    """The binary metrics at the threshold that ``choose`` picks on the samples ``evaluator`` holds."""
    probs, labels = evaluator.classification_arrays()
    point = choose_operating_point(
        probs[:, 1], labels, choose.rule, target_sensitivity=choose.target_sensitivity,
        fixed_threshold=choose.threshold,
    )
    for note in point.notes:
        log.warning(note)
    evaluator.notes.extend(point.notes)
    return {**evaluator.classification_at(point.threshold), "classification/threshold_fallback": float(point.fallback)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    num_classes: int,
    *,
    loss_fn: nn.Module | None = None,
    progress: bool = False,
    desc: str = "eval",
    threshold: float | None = None,
    choose_threshold: OperatingPointConfig | None = None,
) -> dict[str, float | None]:
    """Evaluate ``model`` on ``loader`` and return flat metrics.

    Parameters
    ----------
    threshold
        Binary classification: also report the metrics at this class-1 probability threshold (one chosen
        on the validation split, for a test split).
    choose_threshold
        Binary classification: choose the threshold on these samples by this rule (for a validation split;
        :func:`~mtmedformer.metrics.choose_operating_point`), and report the metrics at it. Excludes
        ``threshold``. Both are ignored without a binary classification head.

    Returns
    -------
    dict
        The :class:`~mtmedformer.metrics.MultiTaskEvaluator` metrics (``"segmentation/dice"``, ...; ``None`` where
        undefined), ``"loss"`` and ``"<task>/loss"`` when ``loss_fn`` is given, ``"mean_score"`` (see
        :func:`primary_score`) and ``"num_examples"``. With ``threshold`` or ``choose_threshold`` also
        ``"classification/threshold"`` and ``"classification/<metric>_at_threshold"``; with
        ``choose_threshold`` ``"classification/threshold_fallback"`` (1.0 when the split could not choose and
        the fixed threshold stood in, else 0.0). The unsuffixed classification metrics stay at the argmax
        (0.5), comparable with runs that had no operating point.

    Raises
    ------
    ValueError
        If both ``threshold`` and ``choose_threshold`` are given.
    """
    if threshold is not None and choose_threshold is not None:
        raise ValueError("pass either threshold (apply it) or choose_threshold (choose one here), not both")
    model.eval()
    tasks = tuple(model.tasks)
    evaluator = MultiTaskEvaluator(tasks, num_classes)
    loss_sum, loss_batches, examples = 0.0, 0, 0
    task_sum: dict[str, float] = {}
    task_n: dict[str, int] = {}
    device = module_device(model)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        batch = batch.to(device)
        outputs = model(batch.image)
        detections = None
        if "detection" in tasks:
            detections = model.heads["detection"].decode(outputs["detection"], tuple(batch.image.shape[-2:]))
        evaluator.update(outputs, batch, detections)  # the evaluator copies what it keeps to the CPU
        examples += len(batch)
        if loss_fn is not None:
            loss_fn.eval()
            out = loss_fn(outputs, batch)
            loss_sum += float(out.total)
            loss_batches += 1
            for task, value in out.per_task.items():
                n = int(out.counts.get(task, 0))
                if n:
                    task_sum[task] = task_sum.get(task, 0.0) + float(value) * n
                    task_n[task] = task_n.get(task, 0) + n
    metrics: dict[str, float | None] = dict(evaluator.compute())
    if "classification" in tasks and num_classes == 2:
        if choose_threshold is not None:
            metrics.update(_at_chosen_threshold(evaluator, choose_threshold))
        elif threshold is not None:
            metrics.update(evaluator.classification_at(threshold))
    if loss_fn is not None:
        metrics["loss"] = loss_sum / max(loss_batches, 1)
        for task in task_sum:
            metrics[f"{task}/loss"] = task_sum[task] / task_n[task]
    metrics["mean_score"] = primary_score(metrics, tasks)
    metrics["num_examples"] = examples
    return metrics
