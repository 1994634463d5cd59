"""Lesion-guided classification pooling: weights, fallbacks, gradient isolation and model wiring."""

import pytest
import torch

from mtmedformer.config.model import DetectionConfig, ModelConfig
from mtmedformer.errors import ConfigError
from mtmedformer.models import build_model
from mtmedformer.models.classification import DecoderLesionPool, LesionPool
from mtmedformer.models.resnet_encoder import FeaturePyramid
from mtmedformer.models.vit_encoder import EncoderOutput


def _tokens(grid, dim):
    h, w = grid
    tokens = torch.randn(2, 1 + h * w, dim)
    return EncoderOutput(tokens=tokens, hidden_states=[], grid=grid)


def test_a_confident_lesion_selects_its_feature_cell():
    # Prepare: 4x4 patch grid on a 32 px image; a lesion covering exactly patch (row 1, col 2)
    features = _tokens((4, 4), 5)
    logits = torch.full((2, 1, 32, 32), -30.0)
    logits[:, :, 8:16, 16:24] = 30.0
    # Execute
    pooled = LesionPool(floor=1e-6)(features, logits)
    # Assert: row-major token order, token 0 is the class token
    torch.testing.assert_close(pooled, features.tokens[:, 1 + 1 * 4 + 2], atol=1e-4, rtol=1e-4)


def test_no_predicted_lesion_falls_back_to_the_mean_of_the_cells():
    # Prepare
    features = _tokens((2, 3), 4)
    logits = torch.full((2, 1, 16, 24), -40.0)
    # Execute
    pooled = LesionPool()(features, logits)
    # Assert
    torch.testing.assert_close(pooled, features.tokens[:, 1:].mean(dim=1), atol=1e-5, rtol=1e-5)


def test_cnn_features_use_the_coarsest_map():
    # Prepare
    coarse = torch.randn(2, 6, 2, 2)
    pyramid = FeaturePyramid(maps={8: torch.randn(2, 3, 8, 8), 32: coarse})
    logits = torch.full((2, 1, 64, 64), -40.0)
    logits[:, :, 32:, :32] = 40.0  # bottom-left quarter = cell (1, 0)
    # Execute
    pooled = LesionPool(floor=1e-6)(pyramid, logits)
    # Assert
    torch.testing.assert_close(pooled, coarse[:, :, 1, 0], atol=1e-4, rtol=1e-4)


def test_classification_gradients_do_not_reach_the_segmentation_logits():
    # Prepare
    features = _tokens((2, 2), 3)
    features.tokens.requires_grad_(True)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    # Execute
    LesionPool()(features, logits).sum().backward()
    # Assert: the features learn, the segmentation output is left alone
    assert features.tokens.grad is not None and features.tokens.grad[:, 1:].abs().sum() > 0
    assert logits.grad is None


@pytest.mark.parametrize("arch, size", [("vit", 32), ("cnn", 64)])
def test_model_with_lesion_pooling_runs_every_head(arch, size):
    # Prepare
    cfg = ModelConfig(
        arch=arch,
        patch_size=8,
        depth=1,
        cls_pool="lesion",
        seg_feature_size=4,
        detection=DetectionConfig(feature_size=4),
    )
    model = build_model(cfg, image_size=size, num_classes=2).eval()
    # Execute
    outputs = model(torch.rand(2, 1, size, size))
    # Assert
    assert list(outputs) == list(cfg.tasks)
    assert outputs["classification"].shape == (2, 2)
    assert model.heads["classification"].needs_lesion_logits


def test_lesion_pooling_without_segmentation_is_rejected_with_the_fix():
    with pytest.raises(ConfigError, match="enable the segmentation task"):
        ModelConfig(cls_pool="lesion", tasks=("classification", "detection"))


def test_floor_must_be_positive():
    with pytest.raises(ValueError, match="floor must be > 0"):
        LesionPool(floor=0.0)


def _levels(batch=2):
    torch.manual_seed(0)
    return {8: torch.randn(batch, 6, 4, 4), 4: torch.randn(batch, 3, 8, 8), 2: torch.randn(batch, 2, 16, 16)}


def test_decoder_pool_concatenates_every_level_coarsest_first():
    # Prepare: a confident lesion covering exactly the cell (row 1, col 2) of the stride-8 map
    levels = _levels()
    logits = torch.full((2, 1, 32, 32), -30.0)
    logits[:, :, 8:16, 16:24] = 30.0
    pool = DecoderLesionPool({8: 6, 4: 3, 2: 2}, margin=0, floor=1e-6)
    # Execute
    pooled = pool(levels, logits)
    # Assert: each level's slice is the mean of the cells under the lesion
    assert pooled.shape == (2, 11) and pool.out_features == 11
    torch.testing.assert_close(pooled[:, :6], levels[8][:, :, 1, 2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled[:, 6:9], levels[4][:, :, 2:4, 4:6].mean(dim=(-2, -1)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled[:, 9:], levels[2][:, :, 4:8, 8:12].mean(dim=(-2, -1)), atol=1e-4, rtol=1e-4)


def test_decoder_pool_margin_widens_the_pooled_region_by_that_many_pixels():
    # Prepare: a lesion on stride-2 cell (4, 4) only; a 2-pixel margin reaches one cell further each way
    levels = _levels()
    logits = torch.full((2, 1, 32, 32), -30.0)
    logits[:, :, 8:10, 8:10] = 30.0
    # Execute
    pooled = DecoderLesionPool({2: 2}, margin=2, floor=1e-6)({2: levels[2]}, logits)
    # Assert
    torch.testing.assert_close(pooled, levels[2][:, :, 3:6, 3:6].mean(dim=(-2, -1)), atol=1e-4, rtol=1e-4)


def test_decoder_pool_trains_the_decoder_features_but_not_the_mask():
    # Prepare
    levels = {s: m.requires_grad_(True) for s, m in _levels().items()}
    logits = torch.randn(2, 1, 32, 32, requires_grad=True)
    # Execute
    DecoderLesionPool({8: 6, 4: 3, 2: 2})(levels, logits).sum().backward()
    # Assert
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in levels.values())
    assert logits.grad is None


@pytest.mark.parametrize(
    ("arch", "size", "width"), [("vit", 32, 4 * (1 + 2 + 4)), ("cnn", 64, 4 + 64 + 64 + 128 + 256)]
)
def test_model_with_decoder_pooling_reads_the_segmentation_decoder(arch, size, width):
    # Prepare
    cfg = ModelConfig(
        arch=arch, patch_size=8, depth=1, cls_pool="decoder", seg_feature_size=4,
        detection=DetectionConfig(feature_size=4),
    )
    model = build_model(cfg, image_size=size, num_classes=2)
    # Execute: the classification loss alone
    model(torch.rand(2, 1, size, size))["classification"].sum().backward()
    # Assert: the classifier reads the decoder levels' channels; its gradient trains the decoder, not the
    # mask output layer (the lesion weights are detached) and not the detection head
    head = model.heads["classification"]
    assert head.needs_decoder_levels and head.fc.in_features == width
    seg = model.heads["segmentation"]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in seg.decoder.parameters())
    assert all(p.grad is None for p in seg.out.parameters())
    assert all(p.grad is None for p in model.heads["detection"].parameters())


def test_decoder_pool_needs_the_decoder_levels():
    # Prepare
    head = build_model(ModelConfig(patch_size=8, depth=1, cls_pool="decoder", seg_feature_size=4), 32, 2)
    head = head.heads["classification"]
    # Execute / Assert
    with pytest.raises(ValueError, match="pass its levels"):
        head(None, torch.rand(1, 1, 32, 32), lesion_logits=torch.rand(1, 1, 32, 32))
