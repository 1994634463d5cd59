"""Losses: per-task terms and the hybrid multi-task loss for partially annotated batches."""

from mtmedformer.losses.classification import ClassificationLoss
from mtmedformer.losses.hybrid import DetectionLossFn, HybridLoss, LossOutput
from mtmedformer.losses.segmentation import SegmentationLoss
from mtmedformer.losses.weighting import FixedWeighting, TaskWeighting, UncertaintyWeighting, build_weighting

__all__ = [
    "ClassificationLoss",
    "DetectionLossFn",
    "FixedWeighting",
    "HybridLoss",
    "LossOutput",
    "SegmentationLoss",
    "TaskWeighting",
    "UncertaintyWeighting",
    "build_weighting",
]
