import json

import pytest
import torch

from mtmedformer.cli import main
from mtmedformer.config import to_dict
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mtmedformer.engine.setup import build_model_and_loss
from mtmedformer.engine.trainer import fit
from mtmedformer.errors import ConfigError


def _datasets(cfg):
    return make_datasets(cfg.data, load_records(cfg.data), seed=cfg.train.seed)


def test_fit_writes_checkpoints_history_plots_and_config(tiny_config):
    # Prepare
    cfg = tiny_config()
    sets = _datasets(cfg)
    # Execute
    result = fit(cfg, sets["train"], sets["val"], sets["test"])
    # Assert
    out = result.output_dir
    for name in (
        "best.pt",
        "last.pt",
        "history.json",
        "history.csv",
        "config.yaml",
        "metrics_val.json",
        "metrics_test.json",
        "losses.png",
        "segmentation_metrics.png",
    ):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert "val/segmentation/dice" in history[-1] and "train/detection/loss" in history[-1]
    assert load_checkpoint(out / "last.pt").epoch == 2


def test_training_is_deterministic_on_cpu(tiny_config, tmp_path):
    # Prepare
    cfg_a = tiny_config(train={"output_dir": str(tmp_path / "a")})
    cfg_b = tiny_config(train={"output_dir": str(tmp_path / "b")})
    # Execute
    fit(cfg_a, *[_datasets(cfg_a)[s] for s in ("train", "val")])
    fit(cfg_b, *[_datasets(cfg_b)[s] for s in ("train", "val")])
    # Assert
    a = load_checkpoint(tmp_path / "a" / "last.pt").model_state
    b = load_checkpoint(tmp_path / "b" / "last.pt").model_state
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten(tiny_config):
    cfg = tiny_config(train={"epochs": 1})
    sets = _datasets(cfg)
    fit(cfg, sets["train"])
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(cfg, sets["train"])
    fit(cfg, sets["train"], overwrite=True)


def test_task_without_annotations_is_rejected_with_the_key_path(tiny_config, tmp_path):
    # Prepare: a chest X-ray set has no masks, so a segmentation head has nothing to learn from
    cfg = tiny_config(
        data={
            "classes": ["normal", "pneumonia"],
            "synthetic": {
                "modality": "chest_xray",
                "num_sites": 2,
                "images_per_site": 8,
                "image_size": 32,
                "cache_dir": str(tmp_path / "cache"),
            },
        }
    )
    sets = _datasets(cfg)
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"model.tasks: 'segmentation' is enabled but no training sample has a mask"):
        fit(cfg, sets["train"])


def test_overwrite_starts_from_an_empty_folder_and_keeps_the_old_run_aside(tiny_config, caplog):
    # Prepare: a first run with a validation split writes best.pt, metrics and plots
    cfg = tiny_config(train={"epochs": 1})
    sets = _datasets(cfg)
    first = fit(cfg, sets["train"], sets["val"])
    (first.output_dir / "notes.txt").write_text("left by the first run")
    old_best = load_checkpoint(first.output_dir / "best.pt")
    # Execute: the second run has a misspelt monitor, so no epoch scores and no best.pt is written by score
    cfg2 = tiny_config(train={"epochs": 2, "monitor": "mean_scor"})
    with caplog.at_level("WARNING", logger="mtmedformer"):
        second = fit(cfg2, sets["train"], sets["val"], overwrite=True)
    # Assert
    out = second.output_dir
    assert not (out / "notes.txt").exists()
    new_best = load_checkpoint(out / "best.pt")
    assert new_best.epoch == 2 and new_best.config.train.monitor == "mean_scor"
    assert not all(torch.equal(new_best.model_state[k], old_best.model_state[k]) for k in old_best.model_state)
    aside = sorted(out.parent.glob(f"{out.name}.previous-*"))
    assert len(aside) == 1 and (aside[0] / "notes.txt").is_file() and (aside[0] / "best.pt").is_file()
    assert load_checkpoint(aside[0] / "best.pt").epoch == old_best.epoch
    assert any("moved to" in r.getMessage() and str(aside[0]) in r.getMessage() for r in caplog.records)


def test_checkpoint_round_trip_rebuilds_the_same_model(tiny_config, tmp_path):
    # Prepare
    cfg = tiny_config()
    objects = build_model_and_loss(cfg)
    path = tmp_path / "ckpt.pt"
    # Execute
    save_checkpoint(path, config=cfg, model=objects.model, loss_fn=objects.loss_fn, epoch=3, metrics={"a": 1.0})
    ckpt = load_checkpoint(path)
    rebuilt = build_model_and_loss(ckpt.config).model
    rebuilt.load_state_dict(ckpt.model_state)
    # Assert
    assert ckpt.config == cfg and ckpt.epoch == 3 and ckpt.metrics == {"a": 1.0}
    x = torch.rand(2, 1, 32, 32)
    objects.model.eval()
    rebuilt.eval()
    assert torch.equal(objects.model(x)["classification"], rebuilt(x)["classification"])


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a checkpoint", "cannot be read"), (None, "does not exist")],
)
def test_bad_checkpoint_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not an MTMedFormer checkpoint"):
        load_checkpoint(path)


def test_time_budget_stops_training(tiny_config):
    cfg = tiny_config(train={"epochs": 50, "max_minutes": 0.001})
    sets = _datasets(cfg)
    result = fit(cfg, sets["train"], sets["val"])
    assert len(result.history.rows) < 50


def test_cli_train_and_evaluate(tiny_config, tmp_path, capsys):
    # Prepare
    cfg = tiny_config(train={"epochs": 1})
    config_path = tmp_path / "exp.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(to_dict(cfg)))
    # Execute
    assert main(["train", "--config", str(config_path)]) == 0
    from mtmedformer.data.synthetic import synthetic_manifest

    manifest = synthetic_manifest(cfg.data.synthetic)
    out = tmp_path / "metrics.json"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "run" / "best.pt"),
            "--data",
            str(manifest),
            "--split",
            "test",
            "--output",
            str(out),
        ]
    )
    # Assert
    assert code == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num_examples"] > 0 and "segmentation/dice" in metrics


def test_cli_reports_bad_config_as_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "train.epochz: unknown key in 'train'. Did you mean 'epochs'?" in capsys.readouterr().err
