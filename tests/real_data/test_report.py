"""docs/real-data.md's generated blocks are filled from the results files, nothing else."""

import json
from pathlib import Path

from benchmarks.real_data.report import main

SETS = {
    "mini_mias": {"splits": {"test": {"images": 4, "patients": 2, "classification": 3, "segmentation": 4,
                                      "detection": 4, "label=benign": 2, "label=malignant": 1}}},
    "kermany": {"official_folders": {"test/normal": 2}, "file_name_patterns": {"IM-N-N.jpeg": 2},
                "numbers_in_both_official_folders": 7, "image_sizes": {"8x8 L": 1}, "splits": {}},
}  # fmt: skip
TEST = {"classification/auc": 0.5, "segmentation/dice": 0.25, "segmentation/dice_lesion": 0.125,
        "detection/map50": None, "mean_score": 0.375}  # fmt: skip
ARM = {"test": TEST, "epochs": 3, "load_before": [1.0], "load_after": [2.0]}


def test_blocks_are_filled_from_results(tmp_path: Path) -> None:
    # Prepare
    results = tmp_path / "results"
    results.mkdir()
    (results / "real_data_sets.json").write_text(json.dumps(SETS))
    mim_arm = {**ARM, "mim": {"steps": 11, "last_masked_l1": 0.5}}
    (results / "mim_demo.json").write_text(json.dumps({"arms": {"scratch": ARM, "mim": mim_arm}}))
    doc = tmp_path / "doc.md"
    blocks = ("sets", "kermany", "mim_demo")
    doc.write_text("".join(f"<!-- BEGIN GENERATED: {b} -->\nSTALE\n<!-- END GENERATED: {b} -->\n" for b in blocks))

    # Execute
    assert main(["--results", str(results), "--doc", str(doc)]) == 0

    # Assert
    text = doc.read_text()
    assert "STALE" not in text
    assert "| mini_mias | test | 4 | 2 | 3 | 4 | 4 | benign 2, malignant 1 |" in text
    assert "| numbers found in both train/ and test/ | 7 |" in text
    assert "| scratch | 0.500 | 0.250 | 0.125 | – | 0.375 | 3 | – | – | 1.00 / 2.00 |" in text
    assert "| mim | 0.500 | 0.250 | 0.125 | – | 0.375 | 3 | 11 | 0.500 | 1.00 / 2.00 |" in text


def test_gap_and_transfer_blocks(tmp_path: Path) -> None:
    # Prepare: a scratch arm and the same arm started from another arm's encoder
    results = tmp_path / "results"
    results.mkdir()
    scratch = {**ARM, "what": "cropped", "image_size": 128, "pretrained_from": None}
    better = {**TEST, "classification/auc": 0.75, "segmentation/dice": 0.5}
    transfer = {**scratch, "test": better, "pretrained_from": "synthetic", "baseline": "mias_crop"}
    finetune = {**transfer, "overrides": ["model.pretrained_heads=true"]}
    arms = {"mias_crop_finetune_synthetic": finetune, "mias_crop": scratch, "mias_crop_from_synthetic": transfer}
    (results / "real_gap.json").write_text(json.dumps({"arms": arms}))
    doc = tmp_path / "doc.md"
    doc.write_text("".join(f"<!-- BEGIN GENERATED: {b} -->\n<!-- END GENERATED: {b} -->\n"
                           for b in ("real_gap", "real_transfer")))  # fmt: skip

    # Execute
    assert main(["--results", str(results), "--doc", str(doc)]) == 0

    # Assert
    text = doc.read_text()
    assert "| `mias_crop` | cropped | 128 | random | 0.500 | – | – | 0.250 | 0.125 | – | 0.375 | 3 | 1.00 / 2.00 |" in (
        text
    )
    assert "| `mias_crop_from_synthetic` | cropped | 128 | synthetic | 0.750 | – | – | 0.500 |" in text
    assert "| `mias_crop_from_synthetic` vs `mias_crop` | +0.250 | +0.250 | +0.000 | – | +0.000 |" in text
    assert "| `mias_crop_finetune_synthetic` | cropped | 128 | synthetic (whole model) |" in text
    assert text.index("| `mias_crop` |") < text.index("| `mias_crop_finetune_synthetic` |")  # ARMS order
