"""Build a model from its config: the one entry point used by training, evaluation and checkpoints."""

from __future__ import annotations

import logging

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.cnn_baseline import CNNMultiTaskBaseline
from mtmedformer.models.mtmedformer import MTMedFormer
from mtmedformer.models.multitask import MultiTaskModel
from mtmedformer.models.parameters import count_parameters

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, type[MultiTaskModel]] = {"vit": MTMedFormer, "cnn": CNNMultiTaskBaseline}
"""``model.arch`` -> model class; each takes ``(cfg, image_size, num_classes)``."""


def build_model(cfg: ModelConfig, image_size: int, num_classes: int) -> MultiTaskModel:
    """Build the multi-task model described by ``cfg`` for square images of ``image_size`` pixels.

    Parameters
    ----------
    cfg
        The ``model`` section of the experiment config.
    image_size
        ``data.image_size``: side of the (resized) training images, pixels.
    num_classes
        ``len(data.classes)``.

    Returns
    -------
    MultiTaskModel
        :class:`MTMedFormer` for ``arch: vit``, :class:`CNNMultiTaskBaseline` for ``arch: cnn``. Rebuild it
        with ``build_model(model.config, model.image_size, model.num_classes)``.

    Raises
    ------
    TypeError, ValueError
        If an argument is of the wrong type or does not fit the architecture; the model class checks them
        (:func:`~mtmedformer.models.multitask.check_build_args`) before any layer is built.
    """
    if not isinstance(cfg, ModelConfig):  # needed to pick the class; the class checks the rest
        raise TypeError(f"expected a ModelConfig, got {type(cfg).__name__}")
    if cfg.arch == "cnn":
        logger.info("model.arch is 'cnn': the ViT settings (preset, patch_size, depth, ...) are not used")
    model = ARCHITECTURES[cfg.arch](cfg, image_size, num_classes)
    logger.info(
        "built %s (%s) with tasks %s: %d parameters",
        type(model).__name__,
        cfg.preset if cfg.arch == "vit" else "resnet18",
        list(model.tasks),
        count_parameters(model),
    )
    return model
