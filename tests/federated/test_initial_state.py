"""The round-0 global model: seeded, and started from ``model.pretrained`` when set (read by the server only)."""

from pathlib import Path

import pytest
import torch

from mtmedformer.config import load_config
from mtmedformer.engine.checkpoint import save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.errors import ConfigError
from server.app import initial_state

SMALL = ["model.depth=1", "data.image_size=64"]


def _encoder_checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A training run's ``best.pt`` whose encoder differs from any seeded start."""
    cfg = load_config(None, SMALL)
    model = build_model_and_loss(cfg).model
    with torch.no_grad():
        for tensor in model.encoder.parameters():
            tensor.add_(0.5)
    save_checkpoint(tmp_path / "best.pt", config=cfg, model=model, epoch=1)
    return tmp_path / "best.pt", {k: v.clone() for k, v in model.encoder.state_dict().items()}


def test_initial_global_model_starts_from_model_pretrained(tmp_path):
    # Prepare
    path, encoder = _encoder_checkpoint(tmp_path)
    # Execute
    scratch = initial_state(load_config(None, SMALL)).global_state
    started = initial_state(load_config(None, [*SMALL, f"model.pretrained={path}"])).global_state
    # Assert: the encoder is the checkpoint's; the heads are the same seeded start as without it
    for name, tensor in encoder.items():
        torch.testing.assert_close(started[f"encoder.{name}"], tensor)
    heads = [k for k in started if k.startswith("heads.")]
    assert heads and all(torch.equal(started[k], scratch[k]) for k in heads)
    assert not torch.equal(started["encoder.cls_token"], scratch["encoder.cls_token"])


def test_initial_global_model_takes_the_heads_too_with_model_pretrained_heads(tmp_path):
    # Prepare: a checkpoint whose heads differ from the seeded start
    cfg = load_config(None, SMALL)
    model = build_model_and_loss(cfg).model
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.startswith("heads."):
                tensor.add_(0.5)
    path = tmp_path / "best.pt"
    save_checkpoint(path, config=cfg, model=model, epoch=1)
    source = model.state_dict()
    # Execute
    started = initial_state(load_config(None, [*SMALL, f"model.pretrained={path}", "model.pretrained_heads=true"]))
    # Assert: every head tensor is the checkpoint's
    heads = [k for k in started.global_state if k.startswith("heads.")]
    assert heads and all(torch.equal(started.global_state[k], source[k]) for k in heads)


def test_missing_pretrained_file_stops_the_server_with_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.pretrained"):
        initial_state(load_config(None, [*SMALL, f"model.pretrained={tmp_path / 'gone.pt'}"]))
