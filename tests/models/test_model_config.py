import pytest

from mtmedformer import TASKS
from mtmedformer.config.loader import from_dict, to_dict
from mtmedformer.config.model import DetectionConfig, ModelConfig
from mtmedformer.errors import ConfigError


def test_defaults_enable_every_task_with_vit_tiny():
    # Prepare / Execute
    cfg = ModelConfig()

    # Assert
    assert cfg.arch == "vit" and cfg.preset == "tiny" and cfg.patch_size == 16 and cfg.depth is None
    assert cfg.tasks == TASKS
    assert cfg.detection == DetectionConfig()


def test_round_trip_through_plain_dict():
    # Prepare
    cfg = ModelConfig(preset="small", depth=2, tasks=("segmentation",), detection=DetectionConfig(stride=8))

    # Execute
    again = from_dict(ModelConfig, to_dict(cfg))

    # Assert
    assert again == cfg


def test_tasks_given_as_list_become_a_tuple():
    # Execute
    cfg = ModelConfig(tasks=["detection", "classification"])

    # Assert
    assert cfg.tasks == ("detection", "classification")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"arch": "transformer"}, "arch: 'transformer' is not one of"),
        ({"preset": "huge"}, "preset: 'huge' is not one of"),
        ({"patch_size": 12}, "patch_size: must be a power of 2 between 4 and 32"),
        ({"patch_size": 64}, "got 64"),
        ({"depth": 0}, "depth: must be >= 1"),
        ({"mlp_ratio": 0}, "mlp_ratio: must be > 0"),
        ({"dropout": 1.0}, "dropout: must be in [0, 1)"),
        ({"attn_dropout": -0.1}, "attn_dropout: must be in [0, 1)"),
        ({"tasks": []}, "tasks: enable at least one task"),
        ({"tasks": ["segmentaton"]}, "Did you mean 'segmentation'?"),
        ({"tasks": ["detection", "detection"]}, "lists a task twice"),
        ({"cls_pool": "max"}, "cls_pool: 'max' is not one of"),
        ({"cls_pool": "lesion"}, "cls_pool: 'lesion' is not one of ['cls', 'mean']"),
        ({"cls_pool": "decoder"}, "cls_pool: 'decoder' is not one of ['cls', 'mean']"),
        ({"stem": "patch"}, "stem: unknown key in 'model'"),
        ({"seg_feature_size": 0}, "seg_feature_size: must be >= 1"),
        ({"decoder_norm": "layer"}, "decoder_norm: 'layer' is not one of"),
        ({"detection": {"stride": 3}}, "detection.stride: must be a power of 2"),
        ({"patch_size": 8, "detection": {"stride": 16}}, "detection.stride: 16 is coarser than the ViT patch size 8"),
        ({"arch": "cnn", "detection": {"stride": 32}}, "detection.stride: 32 is too coarse for the CNN"),
        ({"detection": {"nms_iou": 1.5}}, "detection.nms_iou: must be in [0, 1]"),
        ({"detection": {"prior_prob": 0.0}}, "detection.prior_prob: must be in (0, 1)"),
        ({"detection": {"max_detections": 0}}, "detection.max_detections: must be >= 1"),
        ({"detection": {"score_threshold": 1.0}}, "detection.score_threshold: must be in [0, 1)"),
        ({"detection": {"center_radius": 0}}, "detection.center_radius: must be > 0"),
        ({"heads": 3}, "unknown key"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(data, expected):
    # Execute / Assert
    with pytest.raises(ConfigError) as info:
        from_dict(ModelConfig, data, "model")
    assert expected in str(info.value)
    assert str(info.value).startswith("model.")


def test_python_construction_is_checked_too():
    # Execute / Assert
    with pytest.raises(ConfigError, match="preset: 'giant'"):
        ModelConfig(preset="giant")
