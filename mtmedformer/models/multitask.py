"""The multi-task network shape shared by MTMedFormer and the CNN baseline: one encoder, one head per task."""

from __future__ import annotations

import torch
from torch import nn

from mtmedformer.config.model import ModelConfig

MIN_CNN_IMAGE_SIZE = 64  # ResNet stride 32: at 32 px the last map is 1x1 and BatchNorm fails on a batch of 1


def check_build_args(cfg: ModelConfig, image_size: int, num_classes: int) -> None:
    """Check the arguments of a model constructor before any layer is built.

    Raises
    ------
    TypeError
        If ``cfg`` is not a :class:`ModelConfig` or a size is not an int.
    ValueError
        If ``image_size`` does not fit the architecture (a multiple of ``patch_size`` for ViT, of 32 and at least
        64 for the CNN), or ``num_classes < 2`` while classification is enabled.
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
    elif image_size < MIN_CNN_IMAGE_SIZE or image_size % 32:
        raise ValueError(
            f"image_size {image_size} must be a multiple of 32 and at least {MIN_CNN_IMAGE_SIZE} for the CNN "
            "baseline (ResNet output stride 32); change data.image_size"
        )
    if "classification" in cfg.tasks and num_classes < 2:
        raise ValueError(f"num_classes {num_classes} must be >= 2 when the classification task is enabled")


def standardize_per_image(image: torch.Tensor, min_std: float = 1e-3) -> torch.Tensor:
    """Zero mean, unit variance per image: ``(B, C, H, W) -> (B, C, H, W)``.

    The loaders deliver intensities windowed to [0, 1], mostly dark (a mammogram's background): a ViT's linear
    patch embedding then maps every patch onto one large shared direction and, measured on the synthetic
    mammograms, stays at a constant classifier (training cross-entropy 0.69 on 64 labelled images for 15 epochs,
    ``benchmarks/classification_signal.py --fit``). Standardizing each image
    removes that offset (and site-level brightness and contrast differences) without parameters, so federated
    aggregation is unaffected. ``min_std`` (intensity units) keeps a blank image at zeros instead of
    amplifying rounding noise.
    """
    dims = tuple(range(1, image.ndim))
    mean = image.mean(dim=dims, keepdim=True)
    std = image.std(dim=dims, keepdim=True)
    return (image - mean) / std.clamp_min(min_std)


def _reads_lesions(head: nn.Module) -> bool:
    return bool(getattr(head, "needs_lesion_logits", False))


class MultiTaskModel(nn.Module):
    """An encoder with ``forward_features`` and one head per enabled task, in ``heads`` keyed by task name.

    The input is standardized per image when ``cfg.input_norm == "image"``. Every head is called as
    ``head(features, image)`` (a lesion-guided classifier also gets
    ``lesion_logits``, the segmentation output, so it runs after that head); parameters are named ``encoder.*`` and
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
        Task name -> head, for every task in ``cfg.tasks``.

    Raises
    ------
    ValueError
        If ``heads`` does not hold exactly the tasks of ``cfg.tasks``.
    """

    def __init__(
        self, cfg: ModelConfig, image_size: int, num_classes: int, encoder: nn.Module, heads: dict[str, nn.Module]
    ) -> None:
        super().__init__()
        if set(heads) != set(cfg.tasks):
            raise ValueError(f"heads {sorted(heads)} do not match the enabled tasks {list(cfg.tasks)}")
        if any(_reads_lesions(h) for h in heads.values()) and "segmentation" not in heads:
            raise ValueError("lesion-guided classification pooling needs the segmentation head")
        self.config = cfg
        self.image_size = image_size
        self.num_classes = num_classes
        self.encoder = encoder
        self.heads = nn.ModuleDict({task: heads[task] for task in cfg.tasks})
        self._reads_decoder = any(getattr(h, "needs_decoder_levels", False) for h in heads.values())

    @property
    def tasks(self) -> tuple[str, ...]:
        """The enabled task names, in config order."""
        return tuple(self.heads.keys())

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        """Run the encoder once and every head on ``image`` ``(B, 1, H, W)``.

        Returns
        -------
        dict
            Task name -> output: ``"classification"`` logits ``(B, num_classes)``, ``"segmentation"`` logits
            ``(B, 1, H, W)``, ``"detection"`` the raw dict of :class:`DetectionHead` (decode with
            ``model.heads["detection"].decode``).

        Raises
        ------
        ValueError
            If ``image`` is not ``(B, 1, H, W)`` with a size the encoder accepts.
        """
        if self.config.input_norm == "image":
            image = standardize_per_image(image)
        features = self.encoder.forward_features(image)
        outputs: dict[str, torch.Tensor | dict[str, torch.Tensor]] = {}
        levels = None
        for task, head in self.heads.items():
            if _reads_lesions(head):
                continue
            if task == "segmentation" and self._reads_decoder:
                outputs[task], levels = head.decode(features, image)
            else:
                outputs[task] = head(features, image)
        for task, head in self.heads.items():
            if _reads_lesions(head):  # lesion-guided pooling: after the segmentation head it reads
                outputs[task] = head(features, image, lesion_logits=outputs["segmentation"], decoder_levels=levels)
        return {task: outputs[task] for task in self.heads}
