"""Fit a classifier's :class:`~mtmedformer.models.classification.DescriptorProbe` on one training pass.

:func:`~mtmedformer.engine.loop.train_epoch` (centralized training and each federated site's local epochs)
collects, for every labelled training image of the pass, the lesion descriptors of the mask the model
predicted and the other classifier logits, as the forward passes compute them (forward hooks: nothing is
computed twice), and refits the probe at the end of the pass. So the probe always describes the
segmentation the model has now, and needs no optimizer steps.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mtmedformer.data.batch import Batch
from mtmedformer.models.classification import ClassificationHead
from mtmedformer.models.multitask import MultiTaskModel

log = logging.getLogger(__name__)
MIN_SAMPLES_PER_CLASS = 4  # fewer labelled lesions of a class in the pass: keep the previous fit


class ProbeFitter:
    """Collects ``(descriptors, logits of the linear layer, label)`` of labelled training images; refits the probe.

    Use :meth:`for_model` (None when the model has no probe), call :meth:`observe` after each forward pass,
    :meth:`close` when the pass ends (also when it fails: it removes the hooks) and :meth:`fit` after a
    completed pass.
    """

    def __init__(self, head: ClassificationHead) -> None:
        self.head = head
        self._descriptors: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._rows: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._hooks = [
            head.descriptors.register_forward_hook(self._keep_descriptors),
            head.fc.register_forward_hook(self._keep_logits),
        ]

    @classmethod
    def for_model(cls, model: nn.Module) -> ProbeFitter | None:
        """A fitter for ``model``'s classification head, or None if it has no descriptor probe."""
        if not isinstance(model, MultiTaskModel) or "classification" not in model.tasks:
            return None
        head = model.heads["classification"]
        return cls(head) if isinstance(head, ClassificationHead) and head.probe is not None else None

    def _keep_descriptors(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._descriptors = output.detach().float()

    def _keep_logits(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._logits = output.detach().float()

    def observe(self, batch: Batch) -> None:
        """Keep the labelled samples of the forward pass just run on ``batch``."""
        if self._descriptors is None or self._logits is None:
            return
        keep = batch.has_label.to(self._descriptors.device).bool()
        if keep.any():
            labels = batch.label.to(self._descriptors.device)[keep]
            self._rows.append((self._descriptors[keep].cpu(), self._logits[keep].cpu(), labels.cpu()))
        self._descriptors = self._logits = None

    def close(self) -> None:
        """Stop collecting (remove the forward hooks); safe to call more than once."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def fit(self) -> float | None:
        """Refit the probe on what was collected; return its training cross-entropy, or None when not refitted.

        The probe keeps its previous fit when the pass saw fewer than ``MIN_SAMPLES_PER_CLASS`` labelled
        images of some class (a site without labels, a very short pass).
        """
        self.close()
        if not self._rows:
            return None
        descriptors, logits, labels = (torch.cat(parts) for parts in zip(*self._rows, strict=True))
        self._rows = []
        counts = torch.bincount(labels.long(), minlength=self.head.probe.weight.shape[0])
        if int(counts.min()) < MIN_SAMPLES_PER_CLASS:
            log.debug("descriptor probe not refitted: labelled images per class %s", counts.tolist())
            return None
        device = self.head.probe.weight.device
        loss = self.head.probe.fit(descriptors.to(device), labels.to(device), logits.to(device))
        log.debug("descriptor probe refitted on %d images: cross-entropy %.3f", len(labels), loss)
        return loss
