import pytest

from mtmedformer.config.loader import from_dict
from mtmedformer.config.loss import LossConfig, TaskWeights
from mtmedformer.errors import ConfigError


def test_defaults_are_valid_and_fixed():
    # Execute
    cfg = from_dict(LossConfig, None, "loss")
    # Assert
    assert cfg.weighting == "fixed"
    assert cfg.weights.as_dict() == {"classification": 1.0, "segmentation": 1.0, "detection": 1.0}
    assert cfg.segmentation.ce_kind == "bce"
    assert cfg.classification.class_weights is None


def test_nested_values_are_read():
    # Prepare
    data = {
        "weights": {"segmentation": 2.0},
        "segmentation": {"ce_kind": "focal", "focal_gamma": 1.5},
        "classification": {"label_smoothing": 0.1, "class_weights": [1, 3]},
        "detection": {"loss_weight": 0.5},
    }
    # Execute
    cfg = from_dict(LossConfig, data, "loss")
    # Assert
    assert cfg.weights == TaskWeights(segmentation=2.0)
    assert cfg.segmentation.focal_gamma == 1.5
    assert cfg.classification.class_weights == (1.0, 3.0)
    assert cfg.detection.loss_weight == 0.5


@pytest.mark.parametrize(
    ("data", "key_path"),
    [
        ({"weighting": "uncertanty"}, "loss.weighting"),
        ({"weights": {"segmentation": -1.0}}, "loss.weights.segmentation"),
        ({"weights": {"segmentaton": 1.0}}, "loss.weights.segmentaton"),
        ({"segmentation": {"dice_weight": 0.0, "ce_weight": 0.0}}, "loss.segmentation.dice_weight"),
        ({"segmentation": {"ce_kind": "dice"}}, "loss.segmentation.ce_kind"),
        ({"segmentation": {"focal_gamma": -0.5}}, "loss.segmentation.focal_gamma"),
        ({"segmentation": {"dice_smooth": 0.0}}, "loss.segmentation.dice_smooth"),
        ({"classification": {"label_smoothing": 1.0}}, "loss.classification.label_smoothing"),
        ({"classification": {"class_weights": [1.0]}}, "loss.classification.class_weights"),
        ({"classification": {"class_weights": [1.0, 0.0]}}, "loss.classification.class_weights"),
        ({"detection": {"loss_weight": -2.0}}, "loss.detection.loss_weight"),
        ({"weighting": "uncertainty", "weights": {"detection": 3.0}}, "loss.weights"),
        ({"uncertainty_init": 50.0}, "loss.uncertainty_init"),
    ],
)
def test_bad_values_name_their_key(data, key_path):
    # Execute / Assert
    with pytest.raises(ConfigError, match=key_path.replace(".", r"\.")):
        from_dict(LossConfig, data, "loss")


def test_typo_in_weighting_suggests_the_option():
    # Execute / Assert
    with pytest.raises(ConfigError, match="Did you mean 'uncertainty'"):
        from_dict(LossConfig, {"weighting": "uncertanty"}, "loss")
