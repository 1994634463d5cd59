"""The experiment configuration: frozen, typed dataclasses with commented defaults.

One :class:`ExperimentConfig` is read once at the edge (CLI, ServerApp) by
:func:`mtmedformer.config.load_config` and handed down unchanged. Each section lives in its own
module and checks its own ranges in ``__post_init__``; cross-section consistency is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mtmedformer.config.data import DataConfig
from mtmedformer.config.federated import FederatedConfig
from mtmedformer.config.loader import FieldError
from mtmedformer.config.loss import LossConfig
from mtmedformer.config.model import CNN_MIN_IMAGE_SIZE, CNN_OUTPUT_STRIDE, ModelConfig
from mtmedformer.config.train import TrainConfig

_SYNTHETIC_CLASSES = {"mammography": ("benign", "malignant"), "chest_xray": ("normal", "pneumonia")}


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: data, model, loss, training and federated sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)

    def __post_init__(self) -> None:
        if self.model.arch == "vit" and self.data.image_size % self.model.patch_size:
            raise FieldError(
                "data.image_size",
                f"{self.data.image_size} is not a multiple of model.patch_size {self.model.patch_size}; "
                "change one of them",
            )
        if self.model.arch == "cnn" and (
            self.data.image_size % CNN_OUTPUT_STRIDE or self.data.image_size < CNN_MIN_IMAGE_SIZE
        ):
            raise FieldError(
                "data.image_size",
                f"{self.data.image_size} does not suit the CNN baseline: use a multiple of {CNN_OUTPUT_STRIDE}, "
                f"at least {CNN_MIN_IMAGE_SIZE}",
            )
        if self.data.source == "synthetic":
            expected = _SYNTHETIC_CLASSES[self.data.synthetic.modality]
            if tuple(self.data.classes) != expected:
                raise FieldError(
                    "data.classes",
                    f"the synthetic {self.data.synthetic.modality} set has classes {list(expected)}, "
                    f"got {list(self.data.classes)}; set data.classes: {list(expected)}",
                )
        if self.loss.classification.class_weights is not None and len(self.loss.classification.class_weights) != len(
            self.data.classes
        ):
            raise FieldError(
                "loss.classification.class_weights",
                f"needs one weight per class of data.classes ({len(self.data.classes)}), "
                f"got {len(self.loss.classification.class_weights)}",
            )

