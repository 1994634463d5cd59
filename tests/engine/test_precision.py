"""bf16 autocast training: same loop, float32 weights and loss, learning still happens."""

import pytest
import torch

from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.loop import autocast_context, train_epoch
from mtmedformer.engine.optim import build_optimizer
from mtmedformer.engine.seeding import seed_everything
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import make_loader
from mtmedformer.errors import ConfigError


def _train(cfg, epochs):
    seed_everything(cfg.train.seed)
    sets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    objects = build_model_and_loss(cfg)
    loader = make_loader(sets["train"], cfg, train=True)
    optimizer = build_optimizer({"model": objects.model, "loss": objects.loss_fn}, cfg.train)
    losses = [
        train_epoch(objects.model, objects.loss_fn, loader, optimizer, precision=cfg.train.precision).loss
        for _ in range(epochs)
    ]
    return objects.model, losses


def test_bf16_training_keeps_float32_weights_and_lowers_the_loss(tiny_config):
    # Prepare
    cfg = tiny_config(train={"precision": "bf16", "lr": 0.003})
    # Execute
    model, losses = _train(cfg, epochs=4)
    # Assert
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]


def test_bf16_forward_runs_matrix_products_in_bfloat16_and_fp32_does_not():
    # Prepare
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    # Execute
    with autocast_context("bf16"):
        low = layer(x)
    with autocast_context("fp32"):
        full = layer(x)
    # Assert
    assert low.dtype == torch.bfloat16
    assert full.dtype == torch.float32
    torch.testing.assert_close(low.float(), full, atol=0.05, rtol=0.05)


def test_unknown_precision_is_rejected():
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
        autocast_context("fp16")


def test_precision_config_names_the_key(tiny_config):
    with pytest.raises(ConfigError, match=r"train\.precision"):
        tiny_config(train={"precision": "half"})
