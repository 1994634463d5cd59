"""Start the task heads, too, from another training run's ``best.pt`` (``model.pretrained_heads``).

``model.pretrained`` copies only the encoder of a checkpoint (any ViT file). When the checkpoint is this
project's own ``best.pt`` from a run on another data set with the same tasks -- synthetic phantoms before a
hospital's mammograms, one site's model before another's -- the decoders and the classifier have learned what
a lesion looks like too, and fine-tuning the whole model is the usual transfer. This module copies every head
tensor whose name and shape match; a task the checkpoint lacks, or a head whose shape differs (another class
count, another decoder width), stays freshly initialised and is reported. The hybrid loss's learned task
weights and the optimizer are not copied: they belong to the other data set's training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from mtmedformer.engine.checkpoint import CheckpointError, load_checkpoint
from mtmedformer.errors import ConfigError

log = logging.getLogger(__name__)

_HEADS = "heads."


@dataclass
class HeadsReport:
    """What :func:`load_pretrained_heads` did, by model tensor name."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)  # absent from the checkpoint, or another shape there

    def summary(self) -> str:
        """One line: counts, and the fresh tensors' heads."""
        heads = sorted({name.split(".")[1] for name in self.fresh})
        fresh = f"; fresh in {', '.join(heads)}" if heads else ""
        return f"{len(self.loaded)} head tensors loaded from {self.path}, {len(self.fresh)} left fresh{fresh}"


def load_pretrained_heads(model: nn.Module, path: str | Path) -> HeadsReport:
    """Copy the task-head tensors of the training checkpoint ``path`` into ``model`` where names and shapes match.

    Raises
    ------
    ConfigError
        If ``path`` is not a training checkpoint of this project (a timm or Hugging Face file has no heads to
        give), or it shares no head tensor with ``model`` (other tasks): naming ``model.pretrained_heads``.
    """
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as exc:
        raise ConfigError(
            f"model.pretrained_heads: {exc}; it needs a best.pt of a training run (set it to false to start "
            "only the encoder from model.pretrained)"
        ) from None
    source = checkpoint.model_state
    report = HeadsReport(path=Path(path))
    target = model.state_dict()
    copied = {}
    for name, tensor in target.items():
        if not name.startswith(_HEADS):
            continue
        other = source.get(name)
        if other is not None and other.shape == tensor.shape:
            copied[name] = other.to(tensor.dtype)
            report.loaded.append(name)
        else:
            report.fresh.append(name)
    if not copied:
        raise ConfigError(
            f"model.pretrained_heads: {path} has no head tensor of this model's tasks and shapes "
            f"(it was trained with tasks {list(checkpoint.config.model.tasks)}); set it to false"
        )
    model.load_state_dict(copied, strict=False)
    log.info("pretrained heads: %s", report.summary())
    return report
