"""Shape and margin descriptors of the predicted lesion, fed to the classifier (``model.cls_descriptors``)."""

import math

import pytest
import torch

from mtmedformer.config.model import ModelConfig
from mtmedformer.errors import ConfigError
from mtmedformer.models import build_model
from mtmedformer.models.descriptors import LesionDescriptors
from mtmedformer.models.multitask import standardize_per_image
from strategies.matching import build_spec

SIZE = 96


def _grid():
    axis = torch.arange(SIZE, dtype=torch.float32)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x - SIZE / 2 + 0.5, y - SIZE / 2 + 0.5


def _logits(inside: torch.Tensor) -> torch.Tensor:
    return torch.where(inside, 20.0, -20.0)[None, None]


def _disc(radius: float) -> torch.Tensor:
    x, y = _grid()
    return x.hypot(y) <= radius


def _star(radius: float) -> torch.Tensor:
    x, y = _grid()
    angle = torch.atan2(y, x)
    return x.hypot(y) <= radius * (1 + 0.4 * torch.cos(7 * angle))


def _image(inside: torch.Tensor, blur: int = 0) -> torch.Tensor:
    image = inside.float()[None, None]
    for _ in range(blur):  # ill-defined margin
        image = torch.nn.functional.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    return (image - image.mean()) / image.std()


def test_a_disc_is_regular_and_its_radius_is_reported_relative_to_the_image():
    # Prepare
    disc = _disc(12.0)
    # Execute
    d = LesionDescriptors()(_image(disc), _logits(disc))[0]
    # Assert: irregularity near 0 (pixelation adds a little), radius 12 px of a 96 px image = 2 units of H/16
    assert abs(float(d[0])) < 0.15
    assert float(d[1]) == pytest.approx(math.log(12.0 / (SIZE / 16)), abs=0.05)


def test_an_irregular_outline_scores_higher_than_a_disc_of_the_same_area():
    # Prepare
    disc, star = _disc(12.0), _star(12.0)
    # Execute
    a = LesionDescriptors()(_image(disc), _logits(disc))[0]
    b = LesionDescriptors()(_image(star), _logits(star))[0]
    # Assert
    assert float(b[0]) > float(a[0]) + 0.3


def test_a_sharp_margin_scores_a_higher_edge_gradient_than_a_blurred_one():
    # Prepare
    disc = _disc(14.0)
    # Execute
    sharp = LesionDescriptors()(_image(disc), _logits(disc))[0]
    blurred = LesionDescriptors()(_image(disc, blur=3), _logits(disc))[0]
    # Assert: margin sharpness drops, contrast to the ring stays positive in both
    assert float(sharp[2]) > float(blurred[2]) + 0.3
    assert float(sharp[3]) > 0 and float(blurred[3]) > 0


def test_no_predicted_lesion_gives_finite_bounded_values_and_no_gradient_flows():
    # Prepare
    image = torch.randn(2, 1, SIZE, SIZE, requires_grad=True)
    logits = torch.full((2, 1, SIZE, SIZE), -30.0, requires_grad=True)
    # Execute
    d = LesionDescriptors(clip=5.0)(image, logits)
    # Assert
    assert d.shape == (2, LesionDescriptors.size)
    assert torch.isfinite(d).all() and float(d.abs().max()) <= 5.0
    assert not d.requires_grad


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_descriptors_feed_a_probe_whose_logits_add_to_the_linear_layers(pool):
    # Prepare
    cfg = ModelConfig(patch_size=8, depth=1, seg_feature_size=4, cls_pool=pool, cls_descriptors=True)
    model = build_model(cfg, image_size=32, num_classes=2).eval()
    head = model.heads["classification"]
    pooled = 192  # the ViT-Ti token width, for both pools
    image = torch.rand(2, 1, 32, 32)
    before = model(image)["classification"]
    # Execute: a fitted probe (here: set by hand) shifts the logits by exactly its own output
    head.probe.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0, 0]]))
    head.probe.bias.copy_(torch.tensor([0.5, -0.5]))
    after = model(image)["classification"]
    seen = standardize_per_image(image) if cfg.input_norm == "image" else image  # what the heads get
    descriptors = head.descriptors(seen, model(image)["segmentation"])
    spec = build_spec(model)
    # Assert
    assert head.fc.in_features == pooled  # the descriptors are not concatenated into the learned layer
    torch.testing.assert_close(after - before, head.probe(descriptors))
    assert spec.axes["heads.classification.probe.weight"] == (None, None)
    assert "heads.classification.probe.mean" in model.state_dict()  # buffers: saved, sent and averaged
    assert not any(name.startswith("heads.classification.probe") for name, _ in model.named_parameters())


def test_descriptors_without_segmentation_are_rejected_with_the_fix():
    with pytest.raises(ConfigError, match=r"cls_descriptors: .*enable the segmentation task"):
        ModelConfig(cls_descriptors=True, tasks=("classification", "detection"))


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"margin": 0}, "margin must be >= 1"), ({"clip": 0}, "clip must be > 0")]
)
def test_bad_descriptor_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LesionDescriptors(**kwargs)
