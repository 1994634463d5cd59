"""Optimizer parameter groups: the weight-decay split."""

import torch

from mtmedformer.config.model import ModelConfig
from mtmedformer.config.train import TrainConfig
from mtmedformer.engine.optim import build_optimizer
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


def test_sgd_has_the_same_two_groups():
    # Prepare / Execute
    model = _model()
    optimizer = build_optimizer({"model": model}, TrainConfig(optimizer="sgd", lr=1e-2, weight_decay=0.1))
    # Assert: every trainable parameter in exactly one group, decayed weights first
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
