"""The validation-chosen classification threshold: stored in checkpoints, used for the test split and by evaluate."""

import json
import math

import pytest
import torch

from mtmedformer.cli import main
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.data.synthetic import synthetic_manifest
from mtmedformer.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import fit

STORED = {"threshold": 0.125, "rule": "youden", "fallback": False}


def _saved(cfg, tmp_path, operating_point=None):
    objects = build_model_and_loss(cfg)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, config=cfg, model=objects.model, loss_fn=objects.loss_fn, epoch=1,
                    operating_point=operating_point)
    return path


def _edit(path, edit):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, path)


def _evaluate(cfg, path, tmp_path, *extra):
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", str(path), "--data", str(synthetic_manifest(cfg.data.synthetic)),
                 "--split", "test", "--output", str(out), *extra])
    return code, (json.loads(out.read_text())["metrics"] if code == 0 else None)


def test_the_threshold_is_stored_and_read_back(tiny_config, tmp_path):
    # Prepare
    path = _saved(tiny_config(), tmp_path, STORED)
    # Execute
    ckpt = load_checkpoint(path)
    # Assert
    assert ckpt.operating_point == STORED and ckpt.classification_threshold() == 0.125


def test_an_old_checkpoint_without_a_threshold_loads_and_uses_the_fixed_one(tiny_config, tmp_path):
    # Prepare: a file as written before the operating point existed: no payload key, no config section
    path = _saved(tiny_config(), tmp_path, STORED)

    def make_old(payload):
        del payload["operating_point"]
        del payload["config"]["train"]["operating_point"]

    _edit(path, make_old)
    # Execute
    ckpt = load_checkpoint(path)
    # Assert
    assert ckpt.operating_point == {} and ckpt.classification_threshold() == 0.5


def test_without_a_binary_classifier_there_is_no_threshold(tiny_config, tmp_path):
    ckpt = load_checkpoint(_saved(tiny_config(model={"tasks": ["segmentation"]}), tmp_path, None))
    assert ckpt.classification_threshold() is None


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "0.3", True])
def test_a_damaged_stored_threshold_is_refused(tiny_config, tmp_path, bad):
    path = _saved(tiny_config(), tmp_path, {**STORED, "threshold": bad})
    with pytest.raises(CheckpointError, match="invalid classification threshold"):
        load_checkpoint(path)


def test_fit_stores_the_validation_threshold_and_scores_the_test_split_at_it(tiny_config):
    # Prepare
    cfg = tiny_config(train={"epochs": 2})
    sets = make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)
    # Execute
    result = fit(cfg, sets["train"], sets["val"], sets["test"])
    # Assert
    out = result.output_dir
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    val = json.loads((out / "metrics_val.json").read_text())
    test = json.loads((out / "metrics_test.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert best.operating_point["threshold"] == val["classification/threshold"]
    assert last.operating_point["threshold"] == history[-1]["val/classification/threshold"]
    assert all("val/classification/sensitivity_at_threshold" in row for row in history)
    assert "val/classification/sensitivity" in history[-1]  # the argmax (0.5) value stays beside it
    assert test["classification/threshold"] == best.classification_threshold()
    assert "classification/threshold_fallback" not in test  # applied on the test split, not chosen there
    assert {"classification/sensitivity_at_threshold", "classification/specificity_at_threshold"} <= set(test)


def test_evaluate_uses_the_stored_threshold_and_the_override(tiny_config, tmp_path, capsys):
    # Prepare
    cfg = tiny_config()
    path = _saved(cfg, tmp_path, STORED)
    # Execute
    code_stored, stored = _evaluate(cfg, path, tmp_path)
    code_override, override = _evaluate(cfg, path, tmp_path, "--threshold", "0.75")
    # Assert
    assert code_stored == code_override == 0
    assert stored["classification/threshold"] == 0.125 and override["classification/threshold"] == 0.75
    assert stored["classification/auc"] == override["classification/auc"]


def test_evaluate_of_an_old_checkpoint_uses_the_fixed_threshold(tiny_config, tmp_path, capsys):
    # Prepare
    cfg = tiny_config()
    path = _saved(cfg, tmp_path, None)
    # Execute
    code, metrics = _evaluate(cfg, path, tmp_path)
    # Assert
    assert code == 0 and metrics["classification/threshold"] == 0.5
    assert 0.0 <= metrics["classification/accuracy_at_threshold"] <= 1.0


@pytest.mark.parametrize("value", ["1.5", "0", "nan"])
def test_evaluate_refuses_a_threshold_outside_the_unit_interval(tiny_config, tmp_path, capsys, value):
    cfg = tiny_config()
    code, _ = _evaluate(cfg, _saved(cfg, tmp_path, STORED), tmp_path, "--threshold", value)
    assert code == 2 and "--threshold: must be a class-1 probability in (0, 1)" in capsys.readouterr().err


def test_evaluate_refuses_a_threshold_without_a_binary_classifier(tiny_config, tmp_path, capsys):
    cfg = tiny_config(model={"tasks": ["segmentation"]})
    code, _ = _evaluate(cfg, _saved(cfg, tmp_path, None), tmp_path, "--threshold", "0.3")
    assert code == 2 and "has no binary classification head" in capsys.readouterr().err
