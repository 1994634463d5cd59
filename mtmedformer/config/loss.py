"""Loss section of the experiment config: how the per-task losses are built and weighted together.

YAML layout (every key optional)::

    loss:
      weighting: fixed          # or "uncertainty" (learned, Kendall et al. 2018)
      weights: {classification: 1.0, segmentation: 1.0, detection: 1.0}   # only with weighting: fixed
      uncertainty_init: 0.0     # initial s_t = log sigma_t^2 (only with weighting: uncertainty)
      segmentation: {dice_weight: 1.0, ce_weight: 1.0, ce_kind: bce, focal_gamma: 2.0, dice_smooth: 1.0}
      classification: {label_smoothing: 0.0, class_weights: null}
      detection: {loss_weight: 1.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mtmedformer.config.loader import FieldError, reject_non_finite

Weighting = Literal["fixed", "uncertainty"]
SegmentationCE = Literal["bce", "focal"]


def _non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise FieldError(name, f"must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class TaskWeights:
    """Fixed multipliers of the per-task loss terms (``weighting: fixed``)."""

    classification: float = 1.0  # multiplies the mean cross-entropy over labelled samples
    segmentation: float = 1.0  # multiplies the mean Dice + BCE/focal over samples with a mask
    detection: float = 1.0  # multiplies the mean detection-head loss over samples with boxes

    def __post_init__(self) -> None:
        reject_non_finite(self)
        for name in ("classification", "segmentation", "detection"):
            _non_negative(name, getattr(self, name))

    def as_dict(self) -> dict[str, float]:
        """Return ``{task name: weight}`` for the three tasks."""
        return {"classification": self.classification, "segmentation": self.segmentation, "detection": self.detection}


@dataclass(frozen=True)
class SegmentationLossConfig:
    """Per-sample Dice + (binary cross-entropy or focal) loss on the lesion mask logits."""

    dice_weight: float = 1.0  # weight of the soft Dice term
    ce_weight: float = 1.0  # weight of the pixel-wise BCE (or focal) term
    ce_kind: SegmentationCE = "bce"  # "bce" = binary cross-entropy, "focal" = sigmoid focal loss (Lin et al. 2017)
    focal_gamma: float = 2.0  # focusing parameter of the focal loss (ignored for "bce")
    # Dice numerator and denominator smoothing, in pixels. It makes Dice defined and small (~ predicted area /
    # dice_smooth) on annotated-negative (all-zero) masks predicted empty; see losses/segmentation.py.
    dice_smooth: float = 1.0

    def __post_init__(self) -> None:
        reject_non_finite(self)
        _non_negative("dice_weight", self.dice_weight)
        _non_negative("ce_weight", self.ce_weight)
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise FieldError("dice_weight", "dice_weight and ce_weight are both 0: give at least one a weight > 0")
        _non_negative("focal_gamma", self.focal_gamma)
        if not math.isfinite(self.dice_smooth) or self.dice_smooth <= 0:
            raise FieldError("dice_smooth", f"must be a finite number > 0, got {self.dice_smooth}")


@dataclass(frozen=True)
class ClassificationLossConfig:
    """Cross-entropy on the class logits of labelled samples."""

    label_smoothing: float = 0.0  # mass moved uniformly to all classes, in [0, 1)
    class_weights: tuple[float, ...] | None = None  # one weight per class (data.classes order); None = equal

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise FieldError("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.class_weights is not None:
            if len(self.class_weights) < 2:
                raise FieldError("class_weights", f"needs one weight per class (>= 2), got {list(self.class_weights)}")
            bad = [w for w in self.class_weights if not math.isfinite(w) or w <= 0]
            if bad:
                raise FieldError("class_weights", f"weights must be finite and > 0, got {list(self.class_weights)}")


@dataclass(frozen=True)
class DetectionLossConfig:
    """Scaling of the detection head's own loss (the head defines the loss; see its ``loss`` method)."""

    # Multiplies the head's per-sample loss inside the detection term, before the task weighting (fixed or
    # learned), so it also sets the scale the learned weight starts from under uncertainty weighting.
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        reject_non_finite(self)
        _non_negative("loss_weight", self.loss_weight)


@dataclass(frozen=True)
class LossConfig:
    """How the hybrid multi-task loss is assembled (see :class:`mtmedformer.losses.HybridLoss`)."""

    weighting: Weighting = "fixed"  # fixed task weights, or learned homoscedastic-uncertainty weights
    weights: TaskWeights = field(default_factory=TaskWeights)  # fixed task weights (weighting: fixed only)
    uncertainty_init: float = 0.0  # initial s_t = log sigma_t^2 of every task; 0 = effective weight 1
    segmentation: SegmentationLossConfig = field(default_factory=SegmentationLossConfig)
    classification: ClassificationLossConfig = field(default_factory=ClassificationLossConfig)
    detection: DetectionLossConfig = field(default_factory=DetectionLossConfig)

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.weighting == "uncertainty" and self.weights != TaskWeights():
            # The learned weights exp(-s_t) absorb any constant factor on L_t, so fixed weights would be
            # silently ineffective; say so rather than ignore them.
            raise FieldError(
                "weights",
                "fixed task weights are not used with weighting 'uncertainty' (the learned weights replace them); "
                "remove loss.weights or set loss.weighting: fixed",
            )
        if not math.isfinite(self.uncertainty_init) or abs(self.uncertainty_init) > 10:
            raise FieldError("uncertainty_init", f"must be a finite number in [-10, 10], got {self.uncertainty_init}")
