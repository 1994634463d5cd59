"""Convolutional multi-task baseline: ResNet-18 encoder with the same head types as MTMedFormer.

Segmentation is a U-Net decoder over the ResNet pyramid (strides 16, 8, 4, 2) plus a full-resolution image
skip; detection is the same FCOS-style head on the decoder's stride-4 (``detection.stride``) map;
classification averages the stride-32 map. Same forward and head interfaces as :class:`MTMedFormer`.
"""

from __future__ import annotations

from torch import nn

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.classification import GlobalAvgPool, classification_head
from mtmedformer.models.decoder import build_neck
from mtmedformer.models.detection import DetectionHead
from mtmedformer.models.multitask import MultiTaskModel, check_build_args
from mtmedformer.models.pyramids import CNNPyramid
from mtmedformer.models.resnet_encoder import RESNET18_CHANNELS, ResNetEncoder
from mtmedformer.models.segmentation import SegmentationHead


class CNNMultiTaskBaseline(MultiTaskModel):
    """ResNet-18 multi-task model for grayscale images ``(B, 1, H, W)``, ``H``/``W`` multiples of 32.

    Parameter names: ``encoder.{conv1,bn1,layer1..layer4}.*`` (torchvision's), ``heads.classification.fc.*``,
    ``heads.segmentation.{pyramid,decoder,out}.*``,
    ``heads.detection.{pyramid,decoder,tower,cls_logits,bbox_reg,centerness}.*``.

    Parameters
    ----------
    cfg
        Model config with ``arch == "cnn"`` (the ViT fields are ignored).
    image_size
        Side of the square training images (a multiple of 32, at least 64).
    num_classes
        Number of image classes (>= 2 when classification is enabled).

    Raises
    ------
    ValueError
        If ``cfg.arch`` is not ``"cnn"`` or the sizes do not fit (see :func:`check_build_args`).
    """

    def __init__(self, cfg: ModelConfig, image_size: int, num_classes: int) -> None:
        check_build_args(cfg, image_size, num_classes)
        if cfg.arch != "cnn":
            raise ValueError(f"CNNMultiTaskBaseline needs model.arch 'cnn', got {cfg.arch!r}")
        encoder = ResNetEncoder()
        heads: dict[str, nn.Module] = {}
        if "segmentation" in cfg.tasks:
            pyramid = CNNPyramid(RESNET18_CHANNELS, 1, cfg.seg_feature_size, cfg.decoder_norm)
            heads["segmentation"] = SegmentationHead(pyramid, build_neck(pyramid, 1, cfg.decoder_norm))
        if "classification" in cfg.tasks:
            heads["classification"] = classification_head(  # no class token: cls and mean are the global mean
                cfg, GlobalAvgPool(), RESNET18_CHANNELS[32], num_classes
            )
        if "detection" in cfg.tasks:
            det = cfg.detection
            pyramid = CNNPyramid(RESNET18_CHANNELS, det.stride, det.feature_size, cfg.decoder_norm)
            heads["detection"] = DetectionHead(
                pyramid, build_neck(pyramid, det.stride, cfg.decoder_norm), det, norm=cfg.decoder_norm
            )
        super().__init__(cfg, image_size, num_classes, encoder, heads)
