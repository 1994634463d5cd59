"""The multi-task network shape shared by MTMedFormer and the CNN baseline: one encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

from mtmedformer.config.model import CNN_MIN_IMAGE_SIZE, CNN_OUTPUT_STRIDE, ModelConfig
from mtmedformer.models.classification import ClassificationHead


def check_build_args(cfg: ModelConfig, image_size: int, num_classes: int) -> None:
    """Check the arguments of a model constructor before any layer is built.

    Each model class calls this once, first thing in its constructor. The config already checked the same
    size rules against ``data.image_size`` (:class:`~mtmedformer.config.schema.ExperimentConfig`); this
    check covers models built in code with any ``image_size``.

    Raises
    ------
    TypeError
        If ``cfg`` is not a :class:`ModelConfig` or a size is not an int.
    ValueError
        If ``image_size`` does not fit the architecture (a positive multiple of ``patch_size`` for ViT, a multiple
        of ``CNN_OUTPUT_STRIDE`` and at least ``CNN_MIN_IMAGE_SIZE`` for the CNN), or ``num_classes < 2``
        while classification is enabled.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"expected a ModelConfig, got {type(cfg).__name__}")
    for name, value in (("image_size", image_size), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if cfg.arch == "vit":
        if image_size < cfg.patch_size or image_size % cfg.patch_size:
            raise ValueError(
                f"image_size {image_size} is not a positive multiple of model.patch_size {cfg.patch_size}; "
                "change data.image_size or model.patch_size"
            )
    elif image_size < CNN_MIN_IMAGE_SIZE or image_size % CNN_OUTPUT_STRIDE:
        raise ValueError(
            f"image_size {image_size} must be a multiple of {CNN_OUTPUT_STRIDE} and at least {CNN_MIN_IMAGE_SIZE} "
            f"for the CNN baseline (ResNet output stride {CNN_OUTPUT_STRIDE}); change data.image_size"
        )
    if "classification" in cfg.tasks and num_classes < 2:
        raise ValueError(f"num_classes {num_classes} must be >= 2 when the classification task is enabled")


def standardize_per_image(image: torch.Tensor, min_std: float = 1e-3) -> torch.Tensor:
    """Zero mean, unit variance per image: ``(B, C, H, W) -> (B, C, H, W)``.

    The loaders deliver intensities windowed to [0, 1], mostly dark (a mammogram's background): a ViT's linear
    patch embedding then maps every patch onto one large shared direction, and the classifier stays constant
    on the synthetic mammograms (``benchmarks/classification_signal.py --fit`` shows it). Standardizing each image
    removes that offset (and site-level brightness and contrast differences) without parameters, so federated
    aggregation is unaffected. ``min_std`` (intensity units) keeps a blank image at zeros instead of
    amplifying rounding noise.
    """
    dims = tuple(range(1, image.ndim))
    mean = image.mean(dim=dims, keepdim=True)
    std = image.std(dim=dims, keepdim=True)
    return (image - mean) / std.clamp_min(min_std)


class MultiTaskModel(nn.Module):
    """An encoder with ``forward_features`` and one head per enabled task, in ``heads`` keyed by task name.

    The input is standardized per image when ``cfg.input_norm == "image"``. The heads run in config order
    (:attr:`call_order`): the segmentation and detection heads as ``head(features, image)``, the classification
    head as ``head(features, image, lesion_logits)``, with the segmentation output when its lesion descriptors
    read it (it then runs after the other heads) and None otherwise. Parameters are named ``encoder.*`` and
    ``heads.<task>.*``.

    Parameters
    ----------
    cfg
        The model config (kept as ``self.config`` so a checkpoint can rebuild the model).
    image_size
        Side of the square training images, pixels.
    num_classes
        Number of image classes.
    encoder
        Module with ``forward_features(image) -> features``.
    heads
        Task name -> head, for every task in ``cfg.tasks``; ``"classification"`` is a :class:`ClassificationHead`.

    Raises
    ------
    ValueError
        If ``heads`` does not hold exactly the tasks of ``cfg.tasks``, or the classification head reads the
        segmentation logits (lesion descriptors) and there is no segmentation head.
    TypeError
        If the classification head is not a :class:`ClassificationHead`.
    """

    def __init__(
        self, cfg: ModelConfig, image_size: int, num_classes: int, encoder: nn.Module, heads: dict[str, nn.Module]
    ) -> None:
        super().__init__()
        if set(heads) != set(cfg.tasks):
            raise ValueError(f"heads {sorted(heads)} do not match the enabled tasks {list(cfg.tasks)}")
        classifier = heads.get("classification")
        if classifier is not None and not isinstance(classifier, ClassificationHead):
            raise TypeError(f"the classification head must be a ClassificationHead, got {type(classifier).__name__}")
        if classifier is not None and classifier.reads_segmentation and "segmentation" not in heads:
            raise ValueError(
                "the classification head's lesion descriptors read the segmentation head: enable the segmentation "
                "task or set model.cls_descriptors false"
            )
        self.config = cfg
        self.image_size = image_size
        self.num_classes = num_classes
        self.encoder = encoder
        self.heads = nn.ModuleDict({task: heads[task] for task in cfg.tasks})
        deferred = ("classification",) if classifier is not None and classifier.reads_segmentation else ()
        self.call_order: tuple[str, ...] = tuple(t for t in cfg.tasks if t not in deferred) + deferred

    @property
    def tasks(self) -> tuple[str, ...]:
        """The enabled task names, in config order."""
        return tuple(self.heads.keys())

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """Run the encoder once and every head on ``image`` ``(B, 1, H, W)``.

        Returns
        -------
        dict
            Task name -> output, in config order: ``"classification"`` logits ``(B, num_classes)``,
            ``"segmentation"`` logits ``(B, 1, H, W)``, ``"detection"`` the raw dict of :class:`DetectionHead`
            (decode with ``model.heads["detection"].decode``).

        Raises
        ------
        ValueError
            If ``image`` is not ``(B, 1, H, W)`` with a size the encoder accepts.
        """
        if self.config.input_norm == "image":
            image = standardize_per_image(image)
        features = self.encoder.forward_features(image)
        outputs: dict[str, torch.Tensor | dict[str, torch.Tensor]] = {}
        for task in self.call_order:
            head = self.heads[task]
            if task == "classification":  # its descriptors read the segmentation logits (that head ran first)
                outputs[task] = head(features, image, outputs.get("segmentation"))
            else:
                outputs[task] = head(features, image)
        return {task: outputs[task] for task in self.heads}
