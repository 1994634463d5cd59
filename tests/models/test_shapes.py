import pytest
import torch

from mtmedformer.models import PRESETS


@pytest.mark.parametrize("preset", list(PRESETS))
def test_encoder_width_follows_the_preset(make_model, preset):
    # Prepare
    model = make_model(preset=preset, tasks=("classification",))

    # Execute
    features = model.encoder.forward_features(torch.rand(1, 1, 64, 64))

    # Assert
    width = PRESETS[preset].embed_dim
    assert features.tokens.shape == (1, 1 + 16, width)
    assert model.encoder.blocks[0].attn.num_heads == PRESETS[preset].num_heads
    assert model.encoder.blocks[0].attn.qkv.weight.shape == (3 * width, width)


def test_preset_depth_is_used_when_depth_is_null(make_config):
    from mtmedformer.models import build_model

    model = build_model(make_config(depth=None, tasks=("classification",)), 32, 2)
    assert model.encoder.depth == PRESETS["tiny"].depth == 12


@pytest.mark.parametrize(("patch", "size"), [(4, 32), (8, 64), (16, 64), (32, 64), (16, 96)])
def test_segmentation_logits_have_the_image_size(make_model, patch, size):
    model = make_model(image_size=size, patch_size=patch, tasks=("segmentation",))
    assert model(torch.rand(2, 1, size, size))["segmentation"].shape == (2, 1, size, size)


@pytest.mark.parametrize(
    ("arch", "stride"), [("vit", 2), ("vit", 4), ("vit", 8), ("vit", 16), ("cnn", 4), ("cnn", 8), ("cnn", 16)]
)
def test_detection_map_follows_the_stride(make_model, arch, stride):
    # Execute
    model = make_model(arch=arch, tasks=("detection",), detection={"stride": stride})
    outputs = model(torch.rand(1, 1, 64, 64))["detection"]

    # Assert
    side = 64 // stride
    assert outputs["cls_logits"].shape == (1, 1, side, side)
    assert outputs["ltrb"].shape == (1, 4, side, side) and (outputs["ltrb"] > 0).all()
    assert outputs["centerness"].shape == (1, 1, side, side)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_classification_logits(make_model, pool, num_classes):
    model = make_model(num_classes=num_classes, cls_pool=pool, tasks=("classification",))
    assert model(torch.rand(3, 1, 64, 64))["classification"].shape == (3, num_classes)


def test_vit_accepts_an_input_size_other_than_the_training_size(make_model):
    # Prepare
    model = make_model(image_size=64)
    image = torch.rand(1, 1, 96, 128)

    # Execute
    outputs = model(image)
    detections = model.heads["detection"].decode(outputs["detection"], (96, 128))

    # Assert
    assert outputs["segmentation"].shape == (1, 1, 96, 128)
    assert outputs["detection"]["cls_logits"].shape == (1, 1, 24, 32)
    assert outputs["classification"].shape == (1, 3)
    boxes = detections[0]["boxes"]
    assert (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()


def test_batch_norm_decoders_work(make_model):
    model = make_model(decoder_norm="batch")
    outputs = model(torch.rand(2, 1, 64, 64))
    assert outputs["segmentation"].shape == (2, 1, 64, 64)
    assert any(k.endswith("running_mean") for k in model.state_dict() if k.startswith("heads.segmentation."))
