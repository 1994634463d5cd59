"""Image-level classification loss: cross-entropy with optional label smoothing and class weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtmedformer.config.loss import ClassificationLossConfig


class ClassificationLoss(nn.Module):
    """Cross-entropy over the given (labelled) samples.

    With ``class_weights`` the result is PyTorch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``, so its
    scale does not depend on the weights' overall size.

    Parameters
    ----------
    cfg
        Label smoothing and optional per-class weights (in ``data.classes`` order).
    """

    def __init__(self, cfg: ClassificationLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else ClassificationLossConfig()
        weights = None if self.cfg.class_weights is None else torch.tensor(self.cfg.class_weights, dtype=torch.float32)
        # A buffer follows the module to the training device; persistent=False keeps it out of state dicts.
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the mean cross-entropy.

        Parameters
        ----------
        logits
            ``(N, C)`` class logits, ``N >= 1``.
        labels
            ``(N,)`` int64 class indices in ``[0, C)`` (select labelled samples before calling).

        Returns
        -------
        torch.Tensor
            Scalar loss.

        Raises
        ------
        ValueError
            On bad shapes, labels outside ``[0, C)`` (e.g. the ``-1`` of unlabelled samples), or a number of
            ``loss.classification.class_weights`` that differs from ``C``.
        """
        if logits.ndim != 2 or labels.shape != logits.shape[:1] or logits.shape[0] == 0:
            raise ValueError(
                f"classification loss expects logits (N, C) and labels (N,) with N >= 1, "
                f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        num_classes = logits.shape[1]
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(
                f"classification labels must lie in [0, {num_classes}); got {sorted(set(labels.tolist()))} "
                "(select samples with has_label before calling)"
            )
        weight = self.class_weights
        if weight is not None and weight.numel() != num_classes:
            raise ValueError(
                f"loss.classification.class_weights has {weight.numel()} values but the model predicts "
                f"{num_classes} classes: give one weight per class of data.classes"
            )
        return F.cross_entropy(
            logits,
            labels,
            weight=None if weight is None else weight.to(logits.dtype),
            label_smoothing=self.cfg.label_smoothing,
        )
