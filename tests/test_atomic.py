import json

import pytest
import torch

from mtmedformer.atomic import atomic_torch_save, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path):
    # Prepare
    target = tmp_path / "sub" / "result.json"
    # Execute
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    # Assert
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_failed_write_keeps_previous_file(tmp_path):
    # Prepare
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    # Execute: NaN is not valid JSON, so serialisation fails half-way
    with pytest.raises(ValueError):
        atomic_write_json(target, {"dice": float("nan")})
    # Assert
    assert target.read_text() == "old"
    assert len(list(tmp_path.iterdir())) == 1


def test_atomic_torch_save_round_trip(tmp_path):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save(target, {"w": torch.arange(3)})
    assert torch.equal(torch.load(target)["w"], torch.arange(3))
