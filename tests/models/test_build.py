import re
from unittest import mock

import pytest
import torch
from torch import nn

from mtmedformer import TASKS
from mtmedformer.config.loader import from_dict, to_dict
from mtmedformer.config.model import ModelConfig
from mtmedformer.models import (
    ARCHITECTURES,
    CNNMultiTaskBaseline,
    MTMedFormer,
    build_model,
    count_parameters,
    group_keys,
    group_of_key,
    head_prefix,
)
from mtmedformer.models.classification import ClassificationHead, TokenPool
from mtmedformer.models.descriptors import LesionDescriptors
from mtmedformer.models.multitask import MultiTaskModel, check_build_args
from mtmedformer.models.vit_encoder import EncoderOutput


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_model_is_rebuilt_from_its_config(make_model, arch):
    # Prepare: a checkpoint holds the config as plain data next to the weights
    model = make_model(arch=arch).eval()
    checkpoint = {
        "model": to_dict(model.config),
        "image_size": model.image_size,
        "num_classes": model.num_classes,
        "state_dict": model.state_dict(),
    }
    image = torch.rand(2, 1, 64, 64)

    # Execute
    torch.manual_seed(123)  # a different initialisation, overwritten by the weights
    rebuilt = build_model(
        from_dict(ModelConfig, checkpoint["model"]), checkpoint["image_size"], checkpoint["num_classes"]
    )
    rebuilt.load_state_dict(checkpoint["state_dict"])
    rebuilt.eval()

    # Assert
    expected, actual = model(image), rebuilt(image)
    torch.testing.assert_close(actual["classification"], expected["classification"])
    torch.testing.assert_close(actual["segmentation"], expected["segmentation"])
    torch.testing.assert_close(actual["detection"], expected["detection"])


@pytest.mark.parametrize(("arch", "cls"), [("vit", MTMedFormer), ("cnn", CNNMultiTaskBaseline)])
def test_build_model_picks_the_architecture(make_model, arch, cls):
    assert type(make_model(arch=arch, tasks=("classification",))) is cls


@pytest.mark.parametrize(
    ("overrides", "image_size", "num_classes", "error", "message"),
    [
        ({}, 60, 2, ValueError, "image_size 60 is not a positive multiple of model.patch_size 16"),
        ({"patch_size": 32}, 16, 2, ValueError, "image_size 16 is not a positive multiple of model.patch_size 32"),
        ({"arch": "cnn"}, 96 + 16, 2, ValueError, "image_size 112 must be a multiple of 32 and at least 64"),
        ({"arch": "cnn"}, 32, 2, ValueError, "image_size 32 must be a multiple of 32 and at least 64"),
        ({}, 64, 1, ValueError, "num_classes 1 must be >= 2"),
        ({}, 64.0, 2, TypeError, "image_size must be an int, got 64.0"),
        ({}, True, 2, TypeError, "image_size must be an int, got True"),
    ],
)
def test_bad_build_arguments_name_the_value(make_config, overrides, image_size, num_classes, error, message):
    with pytest.raises(error, match=message):
        build_model(make_config(**overrides), image_size, num_classes)


def test_one_class_is_fine_without_classification(make_config):
    model = build_model(make_config(tasks=("segmentation",)), 64, 1)
    assert model.tasks == ("segmentation",)


def test_config_of_the_wrong_type_is_rejected():
    with pytest.raises(TypeError, match="expected a ModelConfig, got dict"):
        build_model({"arch": "vit"}, 64, 2)


def test_model_class_rejects_the_other_arch(make_config):
    with pytest.raises(ValueError, match=re.escape("MTMedFormer needs model.arch 'vit', got 'cnn'")):
        MTMedFormer(make_config(arch="cnn"), 64, 2)


def test_count_parameters_counts_elements_and_respects_trainable_only(make_model):
    # Prepare
    model = make_model(tasks=("classification",))
    total = sum(p.numel() for p in model.parameters())

    # Execute
    model.encoder.requires_grad_(False)

    # Assert
    assert count_parameters(model) == total
    assert count_parameters(model, trainable_only=True) == 192 * 3 + 3  # the classifier only


def test_keys_group_into_encoder_and_tasks(make_model):
    # Prepare
    keys = list(make_model().state_dict())

    # Execute
    groups = group_keys(keys)

    # Assert
    assert list(groups) == ["encoder", *TASKS]
    assert sum(len(v) for v in groups.values()) == len(keys)
    assert all(k.startswith(head_prefix(t)) for t in TASKS for k in groups[t])


@pytest.mark.parametrize("bad", ["decoder.weight", "heads.unknown.fc.weight"])
def test_foreign_keys_are_rejected(bad):
    with pytest.raises(ValueError, match="belongs neither"):
        group_of_key(bad)


def test_head_prefix_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="unknown task 'segment'"):
        head_prefix("segment")


@pytest.mark.parametrize(("arch", "module"), [("vit", "mtmedformer"), ("cnn", "cnn_baseline")])
def test_build_arguments_are_checked_once_per_construction(make_config, arch, module):
    # Prepare
    with mock.patch(f"mtmedformer.models.{module}.check_build_args", wraps=check_build_args) as check:
        # Execute
        build_model(make_config(arch=arch, tasks=("classification",)), 64, 2)
    # Assert
    check.assert_called_once()


def _classifier(descriptors=None):
    return ClassificationHead(TokenPool("cls"), 8, 2, descriptors=descriptors)


def test_a_classifier_with_lesion_descriptors_needs_the_segmentation_head(make_config):
    # Prepare
    cfg = make_config(tasks=("classification",))
    heads = {"classification": _classifier(LesionDescriptors())}
    # Execute / Assert
    with pytest.raises(ValueError, match="lesion descriptors read the segmentation head: enable the segmentation"):
        MultiTaskModel(cfg, 64, 2, nn.Identity(), heads)


def test_the_classification_head_must_be_a_classification_head(make_config):
    cfg = make_config(tasks=("classification",))
    with pytest.raises(TypeError, match="must be a ClassificationHead, got Linear"):
        MultiTaskModel(cfg, 64, 2, nn.Identity(), {"classification": nn.Linear(1, 2)})


def test_heads_must_match_the_enabled_tasks(make_config):
    with pytest.raises(ValueError, match="do not match the enabled tasks"):
        MultiTaskModel(make_config(tasks=("classification", "segmentation")), 64, 2, nn.Identity(),
                       {"classification": _classifier()})


def test_a_classifier_with_descriptors_called_without_the_segmentation_logits_says_so():
    # Prepare
    head = _classifier(LesionDescriptors())
    features = EncoderOutput(tokens=torch.rand(1, 5, 8), hidden_states=[], grid=(2, 2))
    # Execute / Assert
    with pytest.raises(ValueError, match="pass the segmentation logits"):
        head(features, torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize(
    ("tasks", "descriptors", "order"),
    [
        (TASKS, False, TASKS),
        (TASKS, True, ("segmentation", "detection", "classification")),
        (("segmentation", "classification"), True, ("segmentation", "classification")),
        (("detection", "classification"), False, ("detection", "classification")),
    ],
)
def test_heads_run_in_config_order_with_a_descriptor_classifier_after_segmentation(
    make_model, tasks, descriptors, order
):
    # Prepare
    model = make_model(tasks=tasks, cls_descriptors=descriptors)
    called = []
    for task in tasks:
        model.heads[task].register_forward_hook(lambda module, args, out, task=task: called.append(task))
    # Execute
    outputs = model(torch.rand(1, 1, 64, 64))
    # Assert
    assert model.call_order == order and tuple(called) == order and tuple(outputs) == tasks
