"""MTMedFormer: a ViT encoder shared by lesion segmentation, lesion detection and classification heads.

Nath, Shukla, Gupta, "MTMedFormer", Med. Biol. Eng. Comput. 2025 (doi 10.1007/s11517-025-03404-z); only the
abstract is public, so the heads follow the published building blocks: UNETR decoder (Hatamizadeh et al.,
WACV 2022), FCOS-style detection (Tian et al., ICCV 2019), ViT class-token classifier (Dosovitskiy et al.,
ICLR 2021).
"""

from __future__ import annotations

import math

from torch import nn

from mtmedformer.config.model import ModelConfig
from mtmedformer.models.classification import TokenPool, classification_head
from mtmedformer.models.decoder import build_neck
from mtmedformer.models.detection import DetectionHead
from mtmedformer.models.multitask import MultiTaskModel, check_build_args
from mtmedformer.models.presets import vit_dims
from mtmedformer.models.pyramids import ViTPyramid
from mtmedformer.models.segmentation import SegmentationHead
from mtmedformer.models.vit_encoder import ViTEncoder, evenly_spaced_blocks


class MTMedFormer(MultiTaskModel):
    """ViT multi-task model for grayscale images ``(B, 1, H, W)``.

    The encoder returns the outputs of ``log2(patch_size) - 1`` evenly spaced blocks (3, 6, 9 of 12 for patch 16)
    for the UNETR skips; each dense head owns its skip paths and decoder.

    Parameter names: ``encoder.*`` (see :mod:`mtmedformer.models.vit_encoder`),
    ``heads.classification.fc.*`` (and ``heads.classification.probe.*`` buffers with ``cls_descriptors``),
    ``heads.segmentation.{pyramid,decoder,out}.*``,
    ``heads.detection.{pyramid,decoder,tower,cls_logits,bbox_reg,centerness}.*``.

    Parameters
    ----------
    cfg
        Model config with ``arch == "vit"``.
    image_size
        Side of the square training images, pixels (a multiple of ``cfg.patch_size``); other input sizes
        (multiples of the patch size) work through position-embedding interpolation.
    num_classes
        Number of image classes (>= 2 when classification is enabled).

    Raises
    ------
    ValueError
        If ``cfg.arch`` is not ``"vit"`` or the sizes do not fit (see :func:`check_build_args`).
    """

    def __init__(self, cfg: ModelConfig, image_size: int, num_classes: int) -> None:
        check_build_args(cfg, image_size, num_classes)
        if cfg.arch != "vit":
            raise ValueError(f"MTMedFormer needs model.arch 'vit', got {cfg.arch!r}")
        dims = vit_dims(cfg)
        levels = int(math.log2(cfg.patch_size))
        encoder = ViTEncoder(
            image_size=image_size,
            patch_size=cfg.patch_size,
            embed_dim=dims.embed_dim,
            depth=dims.depth,
            num_heads=dims.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            dropout=cfg.dropout,
            attn_dropout=cfg.attn_dropout,
            hidden_blocks=evenly_spaced_blocks(dims.depth, levels - 1),
        )
        heads: dict[str, nn.Module] = {}
        if "segmentation" in cfg.tasks:
            pyramid = ViTPyramid(dims.embed_dim, cfg.patch_size, 1, cfg.seg_feature_size, cfg.decoder_norm)
            heads["segmentation"] = SegmentationHead(pyramid, build_neck(pyramid, 1, cfg.decoder_norm))
        if "classification" in cfg.tasks:
            heads["classification"] = classification_head(cfg, TokenPool(cfg.cls_pool), dims.embed_dim, num_classes)
        if "detection" in cfg.tasks:
            det = cfg.detection
            pyramid = ViTPyramid(dims.embed_dim, cfg.patch_size, det.stride, det.feature_size, cfg.decoder_norm)
            heads["detection"] = DetectionHead(
                pyramid, build_neck(pyramid, det.stride, cfg.decoder_norm), det, norm=cfg.decoder_norm
            )
        super().__init__(cfg, image_size, num_classes, encoder, heads)
