"""The hybrid multi-task loss for partially annotated batches.

Each task's term is averaged over the samples annotated for that task only (``Batch.has_label``,
``has_mask``, ``has_boxes``). Samples are *selected by index* before the loss is computed, never masked by
multiplying with zero, so:

- a sample without a mask never enters the segmentation loss: its segmentation logits, and the decoder
  weights through them, get exactly zero gradient from this loss (and a NaN elsewhere cannot leak in);
- a task with no annotated sample in the batch has no term at all (no ``0 / 0``);
- annotated negatives (all-zero mask, ``()`` boxes) are annotated and do contribute: "no lesion" is learned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mtmedformer import TASKS
from mtmedformer.config.loss import LossConfig
from mtmedformer.data.batch import Batch
from mtmedformer.losses.classification import ClassificationLoss
from mtmedformer.losses.segmentation import SegmentationLoss
from mtmedformer.losses.weighting import build_weighting

DetectionLossFn = Callable[[Any, list[torch.Tensor], tuple[int, int]], torch.Tensor]
"""``(detection outputs, boxes per image (N_i, 4) xyxy pixels, (H, W)) -> (B,)`` per-sample loss."""


@dataclass
class LossOutput:
    """The result of :class:`HybridLoss`.

    Attributes
    ----------
    total
        Scalar to back-propagate: the weighted sum of the terms present. When no enabled task has an
        annotated sample in the batch it is a zero leaf that requires grad, so ``backward()`` still works and
        leaves every parameter's gradient untouched.
    per_task
        ``{task: detached scalar}`` unweighted mean loss of each task *present* in the batch (tasks without an
        annotated sample are absent, so running averages are not biased by zeros).
    counts
        ``{task: number of annotated samples in the batch}`` for every enabled task (0 allowed).
    """

    total: torch.Tensor
    per_task: dict[str, torch.Tensor]
    counts: dict[str, int]


class HybridLoss(nn.Module):
    """Weighted sum of per-task losses, each averaged over the samples annotated for that task.

    Terms: classification = cross-entropy (:class:`ClassificationLoss`); segmentation = per-sample Dice +
    BCE/focal (:class:`SegmentationLoss`); detection = ``cfg.detection.loss_weight`` times the mean of the
    detection head's per-sample loss. They are combined by fixed weights or learned uncertainty weights
    (:mod:`mtmedformer.losses.weighting`). Under uncertainty weighting this module holds the learnable
    ``s_t``: give ``HybridLoss.parameters()`` to the optimiser together with the model's.

    Parameters
    ----------
    cfg
        The loss section of the experiment config.
    tasks
        Enabled task names, a non-empty subset of :data:`mtmedformer.TASKS`.
    detection_loss
        The detection head's ``loss(outputs, boxes, image_size) -> (B,)``; required when ``"detection"`` is
        enabled. It is called on the whole batch (its output format is head-specific) and must return a
        finite value for every sample, including those without box annotations (empty ``boxes``): the
        non-annotated samples are then dropped by index, which gives them exactly zero gradient.

    Raises
    ------
    ValueError
        On unknown or duplicate tasks, or detection enabled without ``detection_loss``.
    """

    def __init__(self, cfg: LossConfig, tasks: tuple[str, ...], detection_loss: DetectionLossFn | None = None) -> None:
        super().__init__()
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"HybridLoss needs a non-empty list of distinct tasks from {list(TASKS)}, got {list(tasks)}"
            )
        if "detection" in tasks and detection_loss is None:
            raise ValueError("detection is enabled but no detection_loss was given: pass the detection head's loss")
        self.cfg = cfg
        self.tasks = tasks
        self.detection_loss = detection_loss
        self.classification = ClassificationLoss(cfg.classification) if "classification" in tasks else None
        self.segmentation = SegmentationLoss(cfg.segmentation) if "segmentation" in tasks else None
        self.weighting = build_weighting(cfg, tasks)

    def effective_weights(self) -> dict[str, float]:
        """Return the current multiplier of each task's term (constant, or ``exp(-s_t)`` when learned)."""
        return self.weighting.effective_weights()

    def forward(self, outputs: Mapping[str, Any], batch: Batch) -> LossOutput:
        """Compute the hybrid loss of one batch.

        Parameters
        ----------
        outputs
            The model's output dict: ``"classification"`` logits ``(B, C)``, ``"segmentation"`` logits
            ``(B, 1, H, W)``, ``"detection"`` the head's own dict; one key per enabled task.
        batch
            The collated batch (``B`` samples, with the ``has_*`` flags).

        Returns
        -------
        LossOutput
            Total, per-task means and per-task annotated counts.

        Raises
        ------
        ValueError
            If an enabled task's output is missing or its batch size differs from ``B``, or a labelled
            sample's label lies outside ``[0, C)``.
        """
        missing = [t for t in self.tasks if t not in outputs]
        if missing:
            raise ValueError(f"model outputs lack enabled tasks {missing}; got keys {sorted(outputs)}")
        terms: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        if self.classification is not None:
            idx = self._selected(batch.has_label)
            counts["classification"] = int(idx.numel())
            if idx.numel():
                logits = self._batch_tensor(outputs, "classification", len(batch))
                labels = batch.label.index_select(0, idx)
                terms["classification"] = self.classification(logits.index_select(0, idx), labels)
        if self.segmentation is not None:
            idx = self._selected(batch.has_mask)
            counts["segmentation"] = int(idx.numel())
            if idx.numel():
                logits = self._batch_tensor(outputs, "segmentation", len(batch))
                per_sample = self.segmentation(logits.index_select(0, idx), batch.mask.index_select(0, idx))
                terms["segmentation"] = per_sample.mean()
        if self.detection_loss is not None and "detection" in self.tasks:
            idx = self._selected(batch.has_boxes)
            counts["detection"] = int(idx.numel())
            if idx.numel():
                height, width = batch.image.shape[-2:]
                per_sample = self.detection_loss(outputs["detection"], batch.boxes, (int(height), int(width)))
                if per_sample.shape != (len(batch),):
                    raise ValueError(
                        f"the detection head's loss must return one value per sample, shape ({len(batch)},), "
                        f"got {tuple(per_sample.shape)}"
                    )
                terms["detection"] = self.cfg.detection.loss_weight * per_sample.index_select(0, idx).mean()
        if terms:
            total = self.weighting(terms)
        else:
            total = torch.zeros((), device=batch.image.device, requires_grad=True)
        return LossOutput(total=total, per_task={t: v.detach() for t, v in terms.items()}, counts=counts)

    @staticmethod
    def _selected(flags: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(flags.to(torch.bool), as_tuple=False).flatten()  # (B,) bool -> (n,) indices

    @staticmethod
    def _batch_tensor(outputs: Mapping[str, Any], task: str, batch_size: int) -> torch.Tensor:
        value = outputs[task]
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != batch_size:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"model output '{task}' must be a tensor with batch size {batch_size} first, got {shape}")
        return value
