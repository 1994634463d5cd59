import pytest
import torch
import torch.nn.functional as F

from mtmedformer.config.loss import SegmentationLossConfig
from mtmedformer.losses import SegmentationLoss

SIZE = 32


def _lesion_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 8:16, 8:16] = 1.0
    return mask


@pytest.mark.parametrize("ce_kind", ["bce", "focal"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_returns_one_value_per_sample(ce_kind, batch_size):
    # Prepare
    loss = SegmentationLoss(SegmentationLossConfig(ce_kind=ce_kind))
    logits = torch.randn(batch_size, 1, SIZE, SIZE)
    target = (torch.rand(batch_size, 1, SIZE, SIZE) > 0.5).float()
    # Execute
    values = loss(logits, target)
    # Assert
    assert values.shape == (batch_size,)
    assert torch.isfinite(values).all()


@pytest.mark.parametrize("ce_kind", ["bce", "focal"])
def test_empty_mask_predicted_empty_costs_almost_nothing(ce_kind):
    # Prepare: an annotated negative (all-zero mask) and a confident empty prediction
    loss = SegmentationLoss(SegmentationLossConfig(ce_kind=ce_kind))
    target = torch.zeros(1, 1, SIZE, SIZE)
    logits = torch.full((1, 1, SIZE, SIZE), -20.0)
    # Execute
    value = loss(logits, target)
    # Assert
    assert value.item() < 1e-4


@pytest.mark.parametrize("ce_kind", ["bce", "focal"])
def test_false_positive_on_empty_mask_is_penalised(ce_kind):
    # Prepare: annotated negative, but the prediction draws a lesion
    loss = SegmentationLoss(SegmentationLossConfig(ce_kind=ce_kind, ce_weight=0.0))
    target = torch.zeros(1, 1, SIZE, SIZE)
    logits = torch.full((1, 1, SIZE, SIZE), -20.0)
    logits[..., 8:16, 8:16] = 20.0  # 64 false-positive pixels
    # Execute
    dice_only = loss(logits, target)
    # Assert: Dice alone = 64 / (64 + 1) with one pixel of smoothing
    assert dice_only.item() == pytest.approx(64 / 65, rel=1e-4)


def test_tiny_smoothing_would_not_separate_empty_from_empty():
    # Prepare: the reason dice_smooth defaults to one pixel (see losses/segmentation.py)
    target = torch.zeros(1, 1, SIZE, SIZE)
    logits = torch.full((1, 1, SIZE, SIZE), -20.0)
    tiny = SegmentationLoss(SegmentationLossConfig(ce_weight=0.0, dice_smooth=1e-5))
    default = SegmentationLoss(SegmentationLossConfig(ce_weight=0.0))
    # Execute
    tiny_value, default_value = tiny(logits, target).item(), default(logits, target).item()
    # Assert
    assert tiny_value > 0.1
    assert default_value < 1e-5


def test_perfect_lesion_prediction_is_near_zero_and_a_miss_is_near_one():
    # Prepare
    loss = SegmentationLoss(SegmentationLossConfig(ce_weight=0.0))
    target = _lesion_mask()
    perfect = torch.where(target > 0, 20.0, -20.0)
    missed = torch.full_like(target, -20.0)
    # Execute / Assert
    assert loss(perfect, target).item() < 1e-4
    assert loss(missed, target).item() == pytest.approx(64 / 65, rel=1e-4)  # 1 - 1/(64+1)


def test_weights_combine_terms_linearly():
    # Prepare
    logits = torch.randn(2, 1, SIZE, SIZE)
    target = torch.cat([_lesion_mask(), torch.zeros(1, 1, SIZE, SIZE)])
    dice = SegmentationLoss(SegmentationLossConfig(dice_weight=1.0, ce_weight=0.0))(logits, target)
    bce_expected = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2, 3))
    # Execute
    both = SegmentationLoss(SegmentationLossConfig(dice_weight=2.0, ce_weight=0.5))(logits, target)
    # Assert
    torch.testing.assert_close(both, 2.0 * dice + 0.5 * bce_expected)


def test_focal_with_gamma_zero_equals_bce():
    # Prepare
    logits = torch.randn(2, 1, SIZE, SIZE)
    target = (torch.rand(2, 1, SIZE, SIZE) > 0.7).float()
    bce = SegmentationLoss(SegmentationLossConfig(ce_kind="bce"))
    focal = SegmentationLoss(SegmentationLossConfig(ce_kind="focal", focal_gamma=0.0))
    # Execute / Assert
    torch.testing.assert_close(focal(logits, target), bce(logits, target))


@pytest.mark.parametrize(
    ("logits_shape", "target_shape"),
    [((2, 1, 8, 8), (2, 1, 8, 9)), ((2, 8, 8), (2, 8, 8)), ((2, 2, 8, 8), (2, 2, 8, 8))],
)
def test_bad_shapes_raise(logits_shape, target_shape):
    # Execute / Assert
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        SegmentationLoss()(torch.zeros(logits_shape), torch.zeros(target_shape))
