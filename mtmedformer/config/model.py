"""Model section of the experiment config: which network, how wide, which task heads.

Image size and the number of classes are *not* here: they belong to the data
(:class:`~mtmedformer.config.data.DataConfig`) and are passed to
:func:`mtmedformer.models.build_model` next to this section.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mtmedformer import TASKS
from mtmedformer.config.loader import FieldError, reject_non_finite, suggest
from mtmedformer.config.tasks import check_tasks

Arch = Literal["vit", "cnn"]
Preset = Literal["tiny", "small", "base"]
ClsPool = Literal["cls", "mean"]
DecoderNorm = Literal["instance", "batch"]
InputNorm = Literal["image", "none"]

ARCHS: tuple[str, ...] = ("vit", "cnn")
PRESET_NAMES: tuple[str, ...] = ("tiny", "small", "base")

CNN_OUTPUT_STRIDE = 32  # ResNet-18's coarsest map: the CNN baseline's image side must be a multiple
CNN_MIN_IMAGE_SIZE = 64  # at 32 px the stride-32 map is 1x1 and BatchNorm fails on a batch of 1
CNN_MAX_DETECTION_STRIDE = 16  # ResNet-18 skips exist at strides 2..16 (32 is its bottleneck)
MAX_PATCH_SIZE = 32  # the UNETR decoder upsamples by 2 per level; 32 = 5 levels, beyond that tokens are too coarse


def _one_of(name: str, value: object, options: Sequence[str]) -> None:
    # The loader already checks Literal fields; this repeats it for configs built in Python code.
    if value not in options:
        raise FieldError(name, f"{value!r} is not one of {list(options)}.{suggest(str(value), options)}")


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def _in_unit_interval(name: str, value: float, *, closed_high: bool = False) -> None:
    ok = 0.0 <= value <= 1.0 if closed_high else 0.0 <= value < 1.0
    if not ok:
        raise FieldError(name, f"must be in [0, 1{']' if closed_high else ')'}, got {value}")


@dataclass(frozen=True)
class DetectionConfig:
    """Settings of the dense anchor-free (FCOS-style) lesion detection head.

    Distances are in pixels of the model input; ``stride`` is the number of input pixels per location of the
    detection map.
    """

    stride: int = 4  # output stride of the detection map (power of 2); 4 gives small lesions positive locations
    feature_size: int = 16  # neck/tower width unit: a map at stride s has feature_size * s channels (UNETR rule)
    center_radius: float = 1.5  # centre sampling radius, in strides (FCOS): positives lie near the box centre
    focal_alpha: float = 0.25  # weight of positive locations in the sigmoid focal loss (RetinaNet)
    focal_gamma: float = 2.0  # focusing exponent of the focal loss (RetinaNet)
    box_weight: float = 1.0  # weight of the GIoU box-regression term
    centerness_weight: float = 1.0  # weight of the centre-ness BCE term
    prior_prob: float = 0.01  # initial foreground probability of every location (RetinaNet bias init)
    score_threshold: float = 0.05  # decode keeps locations scoring above this (score = sqrt(p_cls * p_ctr))
    nms_iou: float = 0.5  # decode removes boxes overlapping a better one by more than this IoU
    pre_nms_top_k: int = 1000  # decode keeps at most this many candidates per image before NMS
    max_detections: int = 100  # decode returns at most this many boxes per image

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not _is_power_of_two(self.stride) or not 2 <= self.stride <= MAX_PATCH_SIZE:
            raise FieldError("stride", f"must be a power of 2 between 2 and {MAX_PATCH_SIZE}, got {self.stride}")
        if self.feature_size < 1:
            raise FieldError("feature_size", f"must be >= 1, got {self.feature_size}")
        if self.center_radius <= 0:
            raise FieldError("center_radius", f"must be > 0 strides, got {self.center_radius}")
        _in_unit_interval("focal_alpha", self.focal_alpha, closed_high=True)
        if self.focal_gamma < 0:
            raise FieldError("focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        for name in ("box_weight", "centerness_weight"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.prior_prob < 1.0:
            raise FieldError("prior_prob", f"must be in (0, 1), got {self.prior_prob}")
        _in_unit_interval("score_threshold", self.score_threshold)
        _in_unit_interval("nms_iou", self.nms_iou, closed_high=True)
        if self.pre_nms_top_k < 1:
            raise FieldError("pre_nms_top_k", f"must be >= 1, got {self.pre_nms_top_k}")
        if self.max_detections < 1:
            raise FieldError("max_detections", f"must be >= 1, got {self.max_detections}")


@dataclass(frozen=True)
class ModelConfig:
    """The multi-task network: a shared encoder plus one head per enabled task.

    ``arch: vit`` is MTMedFormer (ViT encoder, UNETR segmentation decoder, FCOS-style detection head, token
    classifier); ``arch: cnn`` is the convolutional multi-task baseline (ResNet-18 encoder, U-Net decoder, the
    same detection head, pooled classifier). The ViT fields (``preset``, ``patch_size``, ``depth``, ``mlp_ratio``,
    ``qkv_bias``, ``attn_dropout``, ``cls_pool``) are ignored by ``cnn``.
    """

    arch: Arch = "vit"  # vit = MTMedFormer, cnn = ResNet-18 multi-task baseline
    preset: Preset = "tiny"  # ViT width: tiny 192 dims / 3 heads, small 384 / 6, base 768 / 12 (depth 12)
    patch_size: int = 16  # ViT patch side in pixels (power of 2, 4..32); image_size must be a multiple
    depth: int | None = None  # number of transformer blocks; None = the preset's depth (12)
    mlp_ratio: float = 4.0  # MLP hidden width / embedding width
    qkv_bias: bool = True  # bias on the fused q/k/v projection (as in ViT/DeiT)
    dropout: float = 0.0  # dropout on position-embedded tokens, attention output, MLP and classifier input
    attn_dropout: float = 0.0  # dropout on attention weights (training only)
    tasks: tuple[str, ...] = TASKS  # enabled task heads, a subset of mtmedformer.TASKS
    cls_pool: ClsPool = "cls"  # classification reads the class token or the patch-token mean; the CNN always
    # averages its coarsest map
    cls_descriptors: bool = False  # add a probe on 6 shape/margin descriptors of the predicted lesion (needs
    # segmentation; mtmedformer/models/descriptors.py)
    seg_feature_size: int = 16  # UNETR decoder width unit: the stride-s map has seg_feature_size * s channels
    decoder_norm: DecoderNorm = "instance"  # norm in decoders; instance keeps no site-dependent running stats
    input_norm: InputNorm = "image"  # image = zero mean, unit variance per image before the encoder; none = as loaded
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    pretrained: str | None = None  # ViT checkpoint (timm/Hugging Face .safetensors/.pt) loaded into the encoder
    # also start the task heads from `pretrained` when it is a best.pt of this project (same tasks): fine-tuning
    pretrained_heads: bool = False

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.pretrained_heads and self.pretrained is None:
            raise FieldError("pretrained_heads", "copies the heads of model.pretrained; set model.pretrained too")
        if self.pretrained is not None and self.arch != "vit":
            raise FieldError("pretrained", "loads a ViT checkpoint into the ViT encoder; set arch: vit or drop it")
        _one_of("arch", self.arch, ARCHS)
        _one_of("preset", self.preset, PRESET_NAMES)
        _one_of("cls_pool", self.cls_pool, ("cls", "mean"))
        _one_of("decoder_norm", self.decoder_norm, ("instance", "batch"))
        _one_of("input_norm", self.input_norm, ("image", "none"))
        if not _is_power_of_two(self.patch_size) or not 4 <= self.patch_size <= MAX_PATCH_SIZE:
            raise FieldError(
                "patch_size",
                f"must be a power of 2 between 4 and {MAX_PATCH_SIZE} (UNETR decoder), got {self.patch_size}",
            )
        if self.depth is not None and self.depth < 1:
            raise FieldError("depth", f"must be >= 1 or null (preset depth), got {self.depth}")
        if self.mlp_ratio <= 0:
            raise FieldError("mlp_ratio", f"must be > 0, got {self.mlp_ratio}")
        _in_unit_interval("dropout", self.dropout)
        _in_unit_interval("attn_dropout", self.attn_dropout)
        check_tasks("tasks", tuple(self.tasks))
        object.__setattr__(self, "tasks", tuple(self.tasks))  # a list given in Python code would be unhashable
        if self.cls_descriptors and "classification" in self.tasks and "segmentation" not in self.tasks:
            raise FieldError(
                "cls_descriptors",
                "the descriptors are computed from the segmentation head's lesion: enable the segmentation task "
                "or set cls_descriptors false",
            )
        if self.seg_feature_size < 1:
            raise FieldError("seg_feature_size", f"must be >= 1, got {self.seg_feature_size}")
        if self.arch == "cnn" and self.detection.stride > CNN_MAX_DETECTION_STRIDE:
            raise FieldError(
                "detection.stride",
                f"{self.detection.stride} is too coarse for the CNN baseline; "
                f"use a stride <= {CNN_MAX_DETECTION_STRIDE}",
            )
        if self.arch == "vit" and self.detection.stride > self.patch_size:
            raise FieldError(
                "detection.stride",
                f"{self.detection.stride} is coarser than the ViT patch size {self.patch_size}; "
                "use a stride <= patch_size (the head upsamples tokens to the stride)",
            )
