"""model.pretrained_heads: a training run's best.pt starts the task heads as well as the encoder."""

import pytest
import torch

from mtmedformer.config.loader import FieldError
from mtmedformer.config.model import ModelConfig
from mtmedformer.engine.checkpoint import save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss, build_training_objects
from mtmedformer.engine.warm_start import load_pretrained_heads
from mtmedformer.errors import ConfigError

_ALL = {"classification": 8, "segmentation": 8, "detection": 8}


class _Annotated:
    """Stands in for a training split: only its per-task annotation counts are read."""

    def task_counts(self) -> dict[str, int]:
        return dict(_ALL)


def _source_run(tiny_config, tmp_path, **model_settings):
    """A "trained" model (every weight perturbed) saved as a best.pt, and its config."""
    cfg = tiny_config(model=model_settings) if model_settings else tiny_config()
    model = build_model_and_loss(cfg).model
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    path = tmp_path / "source" / "best.pt"
    save_checkpoint(path, config=cfg, model=model, epoch=3)
    return model, path


def test_heads_and_encoder_equal_the_source_run(tiny_config, tmp_path):
    # Prepare
    source, path = _source_run(tiny_config, tmp_path)
    cfg = tiny_config(model={"pretrained": str(path), "pretrained_heads": True})

    # Execute
    model = build_training_objects(cfg, _Annotated()).model

    # Assert: every tensor of the new model equals the source run's (encoder via model.pretrained, heads here)
    ours, theirs = model.state_dict(), source.state_dict()
    assert any(name.startswith("heads.") for name in ours)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours), "a tensor was not copied"


def test_without_the_switch_only_the_encoder_is_copied(tiny_config, tmp_path):
    source, path = _source_run(tiny_config, tmp_path)
    cfg = tiny_config(model={"pretrained": str(path)})

    model = build_training_objects(cfg, _Annotated()).model

    ours, theirs = model.state_dict(), source.state_dict()
    assert torch.equal(ours["encoder.norm.weight"], theirs["encoder.norm.weight"])
    head = next(name for name in ours if name.startswith("heads.segmentation") and name.endswith("weight"))
    assert not torch.equal(ours[head], theirs[head])


def test_a_head_of_another_shape_stays_fresh_and_is_reported(tiny_config, tmp_path, caplog):
    # Prepare: the source run's segmentation decoder was twice as wide
    source, path = _source_run(tiny_config, tmp_path, seg_feature_size=8)
    cfg = tiny_config(model={"pretrained": str(path), "pretrained_heads": True})

    # Execute
    with caplog.at_level("INFO"):
        model = build_training_objects(cfg, _Annotated()).model

    # Assert: the decoder tensors of another shape are fresh, the other heads copied
    ours, theirs = model.state_dict(), source.state_dict()
    fresh = [n for n in ours if n.startswith("heads.") and ours[n].shape != theirs[n].shape]
    assert fresh and all(n.startswith("heads.segmentation") for n in fresh)
    others = [n for n in ours if n.startswith(("heads.classification", "heads.detection"))]
    assert others and all(torch.equal(ours[n], theirs[n]) for n in others)
    assert "left fresh; fresh in segmentation" in caplog.text


def test_a_file_without_heads_is_rejected_with_the_setting(tiny_config, tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, path)
    cfg = tiny_config(model={"pretrained": str(path), "pretrained_heads": True})

    with pytest.raises(ConfigError, match=r"model\.pretrained_heads: .*best\.pt of a training run"):
        load_pretrained_heads(build_model_and_loss(cfg).model, path)


def test_heads_without_a_checkpoint_is_a_config_error():
    with pytest.raises(FieldError, match=r"set model\.pretrained too"):
        ModelConfig(pretrained_heads=True)
