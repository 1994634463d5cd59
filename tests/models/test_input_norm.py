"""Per-image input standardization (model.input_norm): statistics, invariance, and the off switch."""

import pytest
import torch

from mtmedformer.config.model import DetectionConfig, ModelConfig
from mtmedformer.errors import ConfigError
from mtmedformer.models import build_model
from mtmedformer.models.multitask import standardize_per_image


def _model(input_norm, arch="vit", size=32):
    cfg = ModelConfig(arch=arch, patch_size=8, depth=1, seg_feature_size=4, detection=DetectionConfig(feature_size=4),
                      input_norm=input_norm)
    torch.manual_seed(0)
    return build_model(cfg, image_size=size, num_classes=2).eval()


def test_each_image_gets_zero_mean_and_unit_variance():
    # Prepare
    image = torch.rand(3, 1, 16, 16) * torch.tensor([1.0, 0.2, 5.0]).view(3, 1, 1, 1)
    # Execute
    out = standardize_per_image(image)
    # Assert
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_a_constant_image_maps_to_zeros_not_nan():
    out = standardize_per_image(torch.full((1, 1, 4, 4), 0.7))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-3


@pytest.mark.parametrize("arch, size", [("vit", 32), ("cnn", 64)])
def test_outputs_do_not_depend_on_a_site_brightness_and_contrast_shift(arch, size):
    # Prepare: the same images as two sites might deliver them (gain and offset)
    model = _model("image", arch, size)
    image = torch.rand(2, 1, size, size)
    # Execute
    with torch.no_grad():
        a, b = model(image), model(0.5 * image + 0.3)
    # Assert
    torch.testing.assert_close(a["classification"], b["classification"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a["segmentation"], b["segmentation"], atol=1e-4, rtol=1e-4)


def test_none_feeds_the_images_as_loaded():
    # Prepare
    model = _model("none")
    image = torch.rand(2, 1, 32, 32)
    # Execute
    with torch.no_grad():
        a, b = model(image), model(0.5 * image + 0.3)
    # Assert
    assert not torch.allclose(a["classification"], b["classification"], atol=1e-4)


def test_unknown_input_norm_is_rejected():
    with pytest.raises(ConfigError, match="input_norm"):
        ModelConfig(input_norm="zscore")
