"""Checkpoints written before a setting was removed: they load when they hold its kept value, else fail clearly."""

import pytest
import torch

from mtmedformer.config.retired import drop_retired_keys
from mtmedformer.engine.checkpoint import load_checkpoint, save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.errors import ConfigError


def _old_checkpoint(tiny_config, tmp_path, **retired):
    """A checkpoint of today's model whose saved config also holds ``retired`` keys (``section__key=value``)."""
    cfg = tiny_config()
    model = build_model_and_loss(cfg).model
    path = tmp_path / "old.pt"
    save_checkpoint(path, config=cfg, model=model, epoch=1)
    payload = torch.load(path, weights_only=True)
    for name, value in retired.items():
        section, key = name.split("__")
        payload["config"][section][key] = value
    torch.save(payload, path)
    return path, cfg, model


def test_a_checkpoint_holding_the_kept_values_of_removed_settings_loads_unchanged(tiny_config, tmp_path):
    # Prepare
    path, cfg, model = _old_checkpoint(tiny_config, tmp_path, model__stem="patch", train__classifier_lr_scale=1.0)
    # Execute
    ckpt = load_checkpoint(path)
    # Assert
    assert ckpt.config == cfg
    assert all(torch.equal(ckpt.model_state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("retired", "message"),
    [
        ({"model__stem": "conv"}, "model.stem: 'conv' is a setting this version no longer has"),
        ({"train__classifier_lr_scale": 10.0}, "train.classifier_lr_scale: 10.0 is a setting this version no longer"),
    ],
)
def test_a_checkpoint_of_a_removed_variant_is_rejected_naming_the_key(tiny_config, tmp_path, retired, message):
    # Prepare
    path, _, _ = _old_checkpoint(tiny_config, tmp_path, **retired)
    # Execute / Assert
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(path)


def test_a_checkpoint_of_a_removed_pooling_is_rejected_by_the_loader(tiny_config, tmp_path):
    # Prepare
    path, _, _ = _old_checkpoint(tiny_config, tmp_path, model__cls_pool="decoder")
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"model.cls_pool: 'decoder' is not one of \['cls', 'mean'\]"):
        load_checkpoint(path)


def test_dropping_keeps_everything_else_and_does_not_touch_the_input():
    # Prepare
    saved = {"model": {"stem": "patch", "depth": 2}, "train": {"lr": 0.1}, "data": {}}
    # Execute
    out = drop_retired_keys(saved)
    # Assert
    assert out == {"model": {"depth": 2}, "train": {"lr": 0.1}, "data": {}}
    assert saved["model"] == {"stem": "patch", "depth": 2}


def test_a_federated_checkpoint_saved_with_the_growth_keys_off_still_loads():
    # Prepare: the nested matching keys removed with growth, at their old defaults
    saved = {"federated": {"rounds": 2, "matching": {"growth": False, "gamma": 1.0, "growth_cap": 2.0, "seed": 3}}}
    # Execute
    out = drop_retired_keys(saved)
    # Assert
    assert out == {"federated": {"rounds": 2, "matching": {"seed": 3}}}


def test_a_state_saved_by_a_growth_run_is_refused_with_the_key_path():
    with pytest.raises(ConfigError, match=r"federated\.matching\.growth: True is a setting this version no longer"):
        drop_retired_keys({"federated": {"matching": {"growth": True}}})
