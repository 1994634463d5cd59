"""Optimizer parameter groups: weight decay split and the classifier's learning-rate multiplier."""

import pytest

from mtmedformer.config.model import ModelConfig
from mtmedformer.config.train import TrainConfig
from mtmedformer.engine.optim import build_optimizer, build_scheduler
from mtmedformer.errors import ConfigError
from mtmedformer.models import build_model


def _model():
    return build_model(ModelConfig(patch_size=8, depth=1, seg_feature_size=4), 32, 2)


def test_default_has_two_groups_without_decay_on_norms_and_biases():
    # Prepare / Execute
    model = _model()
    optimizer = build_optimizer({"model": model}, TrainConfig(lr=1e-3))
    # Assert
    assert [g["weight_decay"] for g in optimizer.param_groups] == [TrainConfig().weight_decay, 0.0]
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)
    no_decay = {id(p) for p in optimizer.param_groups[1]["params"]}
    assert id(model.encoder.norm.weight) in no_decay and id(model.heads["classification"].fc.bias) in no_decay


def test_classifier_lr_scale_moves_only_the_classifier_into_faster_groups():
    # Prepare
    model = _model()
    fc = model.heads["classification"].fc
    # Execute
    optimizer = build_optimizer({"model": model}, TrainConfig(lr=1e-3, classifier_lr_scale=10.0))
    scheduler = build_scheduler(optimizer, TrainConfig(lr=1e-3, warmup_steps=0, scheduler="constant"), 10)
    # Assert: fc weight (decayed) and bias (not decayed) at 10x; everything else at lr; the schedule keeps the ratio
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert by_param[id(fc.weight)]["lr"] == pytest.approx(1e-2) and by_param[id(fc.weight)]["weight_decay"] > 0
    assert by_param[id(fc.bias)]["lr"] == pytest.approx(1e-2) and by_param[id(fc.bias)]["weight_decay"] == 0
    fc_ids = {id(fc.weight), id(fc.bias)}
    others = [g["lr"] for g in optimizer.param_groups if not fc_ids & {id(p) for p in g["params"]}]
    assert others == [pytest.approx(1e-3)] * 2
    scheduler.step()
    assert by_param[id(fc.weight)]["lr"] / by_param[id(model.encoder.norm.weight)]["lr"] == pytest.approx(10.0)


def test_classifier_lr_scale_must_be_positive():
    with pytest.raises(ConfigError, match="classifier_lr_scale: must be > 0"):
        TrainConfig(classifier_lr_scale=0.0)
