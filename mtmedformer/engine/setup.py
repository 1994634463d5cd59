"""Build the model and its hybrid loss from a config, checking the config against the training data."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset

from mtmedformer.config import ExperimentConfig
from mtmedformer.engine.warm_start import load_pretrained_heads
from mtmedformer.errors import ConfigError
from mtmedformer.losses import HybridLoss
from mtmedformer.models import build_model
from mtmedformer.models.pretrained import load_pretrained_encoder, use_checkpoint_norm_eps

_WHAT_ANNOTATES = {"classification": "a label", "segmentation": "a mask", "detection": "boxes"}


@dataclass
class TrainingObjects:
    """The model and the loss built for a config."""

    model: nn.Module
    loss_fn: nn.Module


def check_tasks_have_data(cfg: ExperimentConfig, task_counts: dict[str, int]) -> None:
    """Reject a config that enables a task no training sample is annotated for.

    Raises
    ------
    ConfigError
        Naming ``model.tasks`` and the fix (drop the task, or give data with that annotation).
    """
    for task in cfg.model.tasks:
        if task_counts.get(task, 0) == 0:
            raise ConfigError(
                f"model.tasks: '{task}' is enabled but no training sample has {_WHAT_ANNOTATES[task]}; "
                f"remove '{task}' from model.tasks or use data annotated for it"
            )


def build_model_and_loss(cfg: ExperimentConfig) -> TrainingObjects:
    """Build the model and the hybrid loss wired to the model's detection head (if any)."""
    model = build_model(cfg.model, cfg.data.image_size, len(cfg.data.classes))
    if cfg.model.pretrained:
        use_checkpoint_norm_eps(model.encoder)  # a model started from a checkpoint keeps its LayerNorm epsilon
    detection_loss = model.heads["detection"].loss if "detection" in model.tasks else None
    loss_fn = HybridLoss(cfg.loss, tuple(model.tasks), detection_loss=detection_loss)
    return TrainingObjects(model, loss_fn)


def build_training_objects(cfg: ExperimentConfig, train_set: Dataset) -> TrainingObjects:
    """Check the config against ``train_set``'s annotations, build model and loss, load the checkpoints.

    ``model.pretrained`` goes into the encoder; with ``model.pretrained_heads`` its task heads are copied too.
    """
    counts = train_set.task_counts() if hasattr(train_set, "task_counts") else {}
    check_tasks_have_data(cfg, counts)
    objects = build_model_and_loss(cfg)
    if cfg.model.pretrained:
        load_pretrained_encoder(objects.model.encoder, cfg.model.pretrained)
    if cfg.model.pretrained_heads:
        load_pretrained_heads(objects.model, cfg.model.pretrained)
    return objects
