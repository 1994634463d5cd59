"""Fixtures of the model tests: tiny configs (depth 1, 64 px) so every test runs in well under a second."""

from collections.abc import Callable
from typing import Any

import pytest
import torch

from mtmedformer.config.model import DetectionConfig, ModelConfig
from mtmedformer.models import MultiTaskModel, build_model

IMAGE_SIZE = 64
NUM_CLASSES = 3


def tiny_config(**overrides: Any) -> ModelConfig:
    """A depth-1 ViT-Ti config with small decoders; ``detection`` may be given as a dict of overrides."""
    detection = overrides.pop("detection", {})
    values: dict[str, Any] = {
        "depth": 1,
        "seg_feature_size": 4,
        "detection": DetectionConfig(feature_size=4, **detection),
    }
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def make_config() -> Callable[..., ModelConfig]:
    """Return :func:`tiny_config`."""
    return tiny_config


@pytest.fixture
def make_model() -> Callable[..., MultiTaskModel]:
    """Return ``f(image_size=64, num_classes=3, **config_overrides) -> model`` with a fixed seed."""

    def factory(image_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES, **overrides: Any) -> MultiTaskModel:
        torch.manual_seed(0)
        return build_model(tiny_config(**overrides), image_size, num_classes)

    return factory
