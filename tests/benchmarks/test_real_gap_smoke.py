"""Smoke test of benchmarks/real_data/gap.py: arms on the synthetic set and on a converted mini-MIAS stand-in.

No figure is asserted (seconds of training on a few 32-pixel images): only that each arm trained on the data
it names, that a transfer arm started from the source arm's checkpoint, and that missing inputs stop with the
command or arm that provides them.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

import benchmarks.real_data.gap as gap
from benchmarks.real_data.mini_mias import convert

TINY = [
    "data.synthetic.num_sites=2", "data.synthetic.images_per_site=12", "data.synthetic.image_size=32",
    "data.image_size=32", "model.patch_size=8", "model.depth=1", "model.seg_feature_size=4",
    "model.detection.feature_size=4", "model.detection.stride=8", "train.epochs=1", "train.batch_size=4",
    "train.threads=1", "train.max_minutes=0.2",
]  # fmt: skip


def _mias_stand_in(folder: Path, films: int = 16) -> None:
    """``films`` 64-pixel films (a bright breast block, every other one with a benign/malignant circle)."""
    folder.mkdir(parents=True)
    lines = []
    for number in range(1, films + 1):
        film = np.full((64, 64), 5, np.uint8)
        film[8:60, 30:64] = 150
        Image.fromarray(film).save(folder / f"mdb{number:03d}.pgm")
        severity = "BM"[number % 4 // 2]
        lines.append(f"mdb{number:03d} G NORM" if number % 2 else f"mdb{number:03d} G CIRC {severity} 45 32 5")
    (folder / "Info.txt").write_text("\n".join(lines) + "\n")


def _args(tmp_path: Path, *arms: str) -> list[str]:
    args = ["--out", str(tmp_path / "gap.json"), "--work", str(tmp_path / "runs"), "--real-data", str(tmp_path)]
    args += [a for arm in arms for a in ("--arm", arm)]
    settings = [*TINY, f"data.synthetic.cache_dir={tmp_path / 'cache'}"]
    return args + [a for s in settings for a in ("--set", s)]


def test_synthetic_and_transfer_arms_are_recorded(tmp_path: Path) -> None:
    # Prepare: the cropped conversion the mini-MIAS arms read
    _mias_stand_in(tmp_path / "mias-src")
    convert(tmp_path / "mias-src", tmp_path / "mini-mias-crop512", size=64, crop_breast=True)

    # Execute
    status = gap.main(_args(tmp_path, "synthetic", "mias_crop_from_synthetic"))

    # Assert
    results = json.loads((tmp_path / "gap.json").read_text())
    assert status == 0 and list(results["arms"]) == ["synthetic", "mias_crop_from_synthetic"]
    transfer = results["arms"]["mias_crop_from_synthetic"]
    assert transfer["pretrained_from"] == "synthetic" and sum(s["images"] for s in transfer["counts"].values()) == 16
    resolved = (tmp_path / "runs" / "mias_crop_from_synthetic" / "config.yaml").read_text()
    assert str(tmp_path / "runs" / "synthetic" / "best.pt") in resolved and "mini-mias-crop512" in resolved
    assert all(r["epochs"] == 1 and r["test"]["segmentation/n"] for r in results["arms"].values())


def test_missing_conversion_and_missing_source_arm_exit_2_with_what_to_run(tmp_path: Path, capsys) -> None:
    assert gap.main(_args(tmp_path, "mias_crop")) == 2
    assert "--crop-breast" in capsys.readouterr().err
    assert gap.main(_args(tmp_path, "kermany")) == 2
    assert "no chest_xray/" in capsys.readouterr().err

    _mias_stand_in(tmp_path / "mias-src")
    convert(tmp_path / "mias-src", tmp_path / "mini-mias-crop512", size=64, crop_breast=True)
    assert gap.main(_args(tmp_path, "mias_crop_from_synthetic")) == 2
    assert "run the arm 'synthetic' first" in capsys.readouterr().err


def test_another_seed_is_recorded_beside_seed_0(tmp_path: Path) -> None:
    assert gap.main([*_args(tmp_path, "synthetic"), "--seed", "1"]) == 0

    results = json.loads((tmp_path / "gap.json").read_text())
    assert list(results["arms"]) == ["synthetic@seed1"] and results["arms"]["synthetic@seed1"]["seed"] == 1
    assert "seed: 1" in (tmp_path / "runs" / "synthetic@seed1" / "config.yaml").read_text()
