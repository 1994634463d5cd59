"""Checkpoints whose config does not describe their weights, or whose weights are not finite, give clear errors."""

import math

import pytest
import torch

from mtmedformer.cli import main
from mtmedformer.data.synthetic import synthetic_manifest
from mtmedformer.engine.checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss


def _saved(tiny_config, tmp_path, **sections):
    cfg = tiny_config(**sections)
    objects = build_model_and_loss(cfg)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, config=cfg, model=objects.model, loss_fn=objects.loss_fn, epoch=1)
    return cfg, path


def _edit(path, edit):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, path)


def test_a_config_that_does_not_match_the_weights_names_the_tensors_and_the_config(tiny_config, tmp_path, capsys):
    # Prepare: weights of a 1-block ViT under a config that says 2 blocks
    cfg, path = _saved(tiny_config, tmp_path)
    _edit(path, lambda p: p["config"]["model"].__setitem__("depth", 2))
    # Execute
    code = main(["evaluate", "--checkpoint", str(path), "--data", str(synthetic_manifest(cfg.data.synthetic))])
    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert "model weights do not fit the model its config builds" in err
    assert "model.depth=2" in err and "missing: " in err and "blocks.1." in err and str(path) in err


def test_wrong_shapes_are_listed_with_both_shapes(tiny_config, tmp_path):
    # Prepare: weights of a 3-class model under a config with 2 classes
    _, path = _saved(tiny_config, tmp_path)
    ckpt = load_checkpoint(path)
    name = next(k for k in ckpt.model_state if k.startswith("heads.classification") and k.endswith("bias"))
    ckpt.model_state[name] = torch.zeros(3)
    model = build_model_and_loss(ckpt.config).model
    # Execute / Assert
    with pytest.raises(CheckpointError, match=rf"wrong shape: {name} \(3,\) \(model \(2,\)\)"):
        load_model_state(ckpt, model)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_are_rejected_naming_the_tensors(tiny_config, tmp_path, bad):
    # Prepare
    _, path = _saved(tiny_config, tmp_path)
    names = []

    def poison(payload):
        for name in list(payload["model"])[:2]:
            if payload["model"][name].is_floating_point():
                payload["model"][name].view(-1)[0] = bad
                names.append(name)

    _edit(path, poison)
    # Execute / Assert
    with pytest.raises(CheckpointError, match="NaN or infinite values in") as info:
        load_checkpoint(path)
    assert all(name in str(info.value) for name in names) and names


def test_a_matching_checkpoint_loads_exactly(tiny_config, tmp_path):
    # Prepare
    cfg, path = _saved(tiny_config, tmp_path)
    ckpt = load_checkpoint(path)
    model = build_model_and_loss(cfg).model
    # Execute
    load_model_state(ckpt, model)
    # Assert
    assert all(torch.equal(v, ckpt.model_state[k]) for k, v in model.state_dict().items())
