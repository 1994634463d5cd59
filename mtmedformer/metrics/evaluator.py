"""Accumulate model outputs over an evaluation set and compute every enabled task's metrics.

Only samples annotated for a task (``Batch.has_label``, ``has_mask``, ``has_boxes``) are scored for it.
:meth:`MultiTaskEvaluator.compute` returns flat, JSON-safe values: numbers, or ``None`` where a metric is
undefined (never NaN), with the reasons in :attr:`MultiTaskEvaluator.notes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mtmedformer import TASKS
from mtmedformer.data.batch import Batch
from mtmedformer.metrics.classification import classification_metrics
from mtmedformer.metrics.detection import detection_metrics
from mtmedformer.metrics.segmentation import segmentation_scores, summarize_segmentation

THRESHOLD_KEYS = ("accuracy", "sensitivity", "specificity", "f1")  # reported again at an operating point


class MultiTaskEvaluator:
    """Collect predictions batch by batch, then compute metrics per task.

    Keys of :meth:`compute` (per enabled task; ``None`` = undefined, see :attr:`notes`):

    - ``classification/{n, auc, accuracy, sensitivity, specificity, f1}``
      (:mod:`mtmedformer.metrics.classification`; probabilities = softmax of the logits; predicted class =
      argmax, and for binary classification also at a chosen threshold: :meth:`classification_at`);
    - ``segmentation/{n, n_lesion, dice, iou, hd95, dice_lesion, iou_lesion, hd95_lesion}``
      (:mod:`mtmedformer.metrics.segmentation`; mask = ``sigmoid(logits) >= seg_threshold``; HD95 in pixels);
    - ``detection/{n, n_boxes, map50, map_rsna, n_rsna}`` (:mod:`mtmedformer.metrics.detection`).

    Parameters
    ----------
    tasks
        Enabled task names, a non-empty subset of :data:`mtmedformer.TASKS`.
    num_classes
        Number of classes of the classification head (>= 2).
    seg_threshold
        Probability threshold of the predicted mask, in ``(0, 1)``. Default 0.5.

    Raises
    ------
    ValueError
        On unknown or duplicate tasks, ``num_classes < 2`` or a threshold outside ``(0, 1)``.
    """

    def __init__(self, tasks: Sequence[str], num_classes: int, seg_threshold: float = 0.5) -> None:
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in TASKS]
        if not tasks or unknown or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"evaluator needs a non-empty list of distinct tasks from {list(TASKS)}, got {list(tasks)}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not 0.0 < seg_threshold < 1.0:
            raise ValueError(f"seg_threshold must be in (0, 1), got {seg_threshold}")
        self.tasks = tasks
        self.num_classes = num_classes
        self.seg_threshold = seg_threshold
        self.notes: list[str] = []
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (and the notes)."""
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._seg: list[dict[str, np.ndarray]] = []
        self._detections: list[dict[str, np.ndarray]] = []
        self._gt_boxes: list[np.ndarray] = []
        self.notes = []

    @torch.no_grad()
    def update(
        self, outputs: Mapping[str, Any], batch: Batch, detections: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        """Add one batch.

        Parameters
        ----------
        outputs
            The model's output dict: ``"classification"`` logits ``(B, C)``, ``"segmentation"`` logits
            ``(B, 1, H, W)`` (one key per enabled task; ``"detection"`` is not read, see ``detections``).
        batch
            The batch the outputs belong to (``B`` samples).
        detections
            The detection head's decoded output for the batch, one ``{"boxes": (N_i, 4), "scores": (N_i,)}``
            per sample (``xyxy`` pixels); required when detection is enabled.

        Raises
        ------
        ValueError
            If an enabled task's output is missing or has the wrong batch size or class count, or detection is
            enabled and ``detections`` is missing or has the wrong length.
        """
        size = len(batch)
        if "classification" in self.tasks:
            logits = self._output(outputs, "classification", size)
            if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                raise ValueError(f"classification logits must be (B, {self.num_classes}), got {tuple(logits.shape)}")
            idx = batch.has_label.to(torch.bool).cpu()
            probs = torch.softmax(logits.detach().float().cpu(), dim=1)[idx]
            self._probs.append(probs.numpy())
            self._labels.append(batch.label.detach().cpu()[idx].numpy())
        if "segmentation" in self.tasks:
            logits = self._output(outputs, "segmentation", size)
            idx = batch.has_mask.to(torch.bool).cpu()
            if bool(idx.any()):
                pred = torch.sigmoid(logits.detach().float().cpu()[idx]) >= self.seg_threshold
                self._seg.append(segmentation_scores(pred, batch.mask.detach().cpu()[idx] > 0.5))
        if "detection" in self.tasks:
            if detections is None or len(detections) != size:
                got = "none" if detections is None else f"{len(detections)}"
                raise ValueError(f"detection is enabled: pass the decoded detections of all {size} samples, got {got}")
            for i in torch.nonzero(batch.has_boxes.cpu(), as_tuple=False).flatten().tolist():
                det = detections[i]
                self._detections.append({k: _numpy(det[k]) for k in ("boxes", "scores")})
                self._gt_boxes.append(_numpy(batch.boxes[i]).reshape(-1, 4))

    def compute(self) -> dict[str, float | int | None]:
        """Return the metrics of everything added since the last :meth:`reset` (see the class docstring).

        Also refreshes :attr:`notes`, the list of reasons for every ``None``.
        """
        self.notes = []
        out: dict[str, float | int | None] = {}
        if "classification" in self.tasks:
            values, notes = classification_metrics(*self.classification_arrays())
            self._add(out, "classification", values, notes)
        if "segmentation" in self.tasks:
            keys = ("dice", "iou", "hd95", "has_lesion")
            scores = {k: np.concatenate([s[k] for s in self._seg]) if self._seg else np.zeros(0) for k in keys}
            values = summarize_segmentation(scores)
            notes = []
            if values["n"] == 0:
                notes.append("segmentation: no sample with a mask was evaluated; all metrics are undefined")
            elif values["n_lesion"] == 0:
                notes.append("segmentation/*_lesion are undefined: no evaluated mask contains a lesion")
            self._add(out, "segmentation", values, notes)
        if "detection" in self.tasks:
            values, notes = detection_metrics(self._detections, self._gt_boxes)
            if values["n"] == 0:
                notes = ["detection: no sample with box annotations was evaluated; all metrics are undefined"]
            self._add(out, "detection", values, notes)
        return out

    def classification_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The labelled samples added so far: probabilities ``(N, C)`` (softmax of the logits) and labels ``(N,)``."""
        probs = np.concatenate(self._probs) if self._probs else np.zeros((0, self.num_classes))
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)
        return probs, labels

    def classification_at(self, threshold: float) -> dict[str, float | None]:
        """Binary classification metrics at a class-1 probability ``threshold`` (an operating point).

        Returns ``classification/threshold`` and ``classification/{accuracy, sensitivity, specificity,
        f1}_at_threshold`` (``None`` where undefined); the unsuffixed keys of :meth:`compute` stay the argmax
        (0.5) values. Call after :meth:`compute`: the notes of undefined values are added to :attr:`notes`.

        Raises
        ------
        ValueError
            If classification is not enabled, ``num_classes != 2`` or ``threshold`` is outside ``[0, 1]``.
        """
        if "classification" not in self.tasks or self.num_classes != 2:
            raise ValueError(f"a threshold needs binary classification, got tasks {list(self.tasks)} "
                             f"and {self.num_classes} classes")
        values, notes = classification_metrics(*self.classification_arrays(), threshold=threshold)
        out: dict[str, float | None] = {"classification/threshold": float(threshold)}
        out.update({f"classification/{k}_at_threshold": values[k] for k in THRESHOLD_KEYS})
        self.notes.extend(f"{note} (at threshold {threshold:.4g})" for note in notes if "/auc" not in note)
        return out

    def _add(self, out: dict[str, Any], task: str, values: Mapping[str, Any], notes: list[str]) -> None:
        out.update({f"{task}/{k}": v for k, v in values.items()})
        self.notes.extend(notes)

    @staticmethod
    def _output(outputs: Mapping[str, Any], task: str, size: int) -> torch.Tensor:
        value = outputs.get(task)
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != size:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"model output '{task}' must be a tensor with batch size {size} first, got {got}")
        return value


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)
