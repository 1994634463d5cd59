"""Metrics per task (MONAI first) and the multi-task evaluator that produces JSON-safe results."""

from mtmedformer.metrics.classification import CLASSIFICATION_KEYS, classification_metrics, roc_auc
from mtmedformer.metrics.detection import (
    RSNA_THRESHOLDS,
    average_precision,
    detection_metrics,
    rsna_image_score,
    rsna_score,
)
from mtmedformer.metrics.evaluator import MultiTaskEvaluator
from mtmedformer.metrics.operating_point import OPERATING_RULES, OperatingPoint, choose_operating_point
from mtmedformer.metrics.segmentation import SEGMENTATION_KEYS, segmentation_scores, summarize_segmentation

__all__ = [
    "CLASSIFICATION_KEYS",
    "OPERATING_RULES",
    "RSNA_THRESHOLDS",
    "SEGMENTATION_KEYS",
    "MultiTaskEvaluator",
    "OperatingPoint",
    "average_precision",
    "choose_operating_point",
    "classification_metrics",
    "detection_metrics",
    "roc_auc",
    "rsna_image_score",
    "rsna_score",
    "segmentation_scores",
    "summarize_segmentation",
]
