"""check-data decodes every image, on_bad_row: skip skips undecodable files (check time and training)."""

import json
import logging

import numpy as np
import pydicom
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from mtmedformer.cli import main
from mtmedformer.config import config_from_dict
from mtmedformer.data.batch import collate_samples
from mtmedformer.data.decode_check import decode_records
from mtmedformer.data.image_io import read_image
from mtmedformer.data.sources import load_records, make_datasets
from mtmedformer.errors import DataError
from tests.data.fixtures_native import write_csv, write_dicom

GOOD = [("good0.png", "benign", "train"), ("good1.png", "malignant", "train"), ("good2.png", "benign", "val"),
        ("good3.png", "malignant", "test")]
BAD = [("junk.png", "benign", "train"), ("truncated.png", "malignant", "train"), ("nopixels.dcm", "benign", "val")]


def _png(path, seed, size=40):
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_bad_files(root):
    """The three kinds of file that passed check-data before: not an image, cut short, a DICOM header only."""
    (root / "junk.png").write_bytes(np.random.default_rng(0).bytes(3000))
    whole = _png(root / "whole.png", 9, size=64).read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "whole.png").unlink()
    write_dicom(root / "nopixels.dcm", np.zeros((40, 40), dtype=np.uint16))
    ds = pydicom.dcmread(root / "nopixels.dcm")
    del ds.PixelData
    ds.save_as(root / "nopixels.dcm", enforce_file_format=True)


@pytest.fixture
def manifest(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i, (name, _, _) in enumerate(GOOD):
        _png(root / name, i)
    write_bad_files(root)
    rows = [[name, label, f"p{i}", split] for i, (name, label, split) in enumerate(GOOD + BAD)]
    return write_csv(root / "manifest.csv", ["image", "label", "patient_id", "split"], rows)


def _settings(manifest, on_bad_row):
    return ["--set", "data.source=manifest", "--set", f"data.path={manifest}", "--set", "data.image_size=32",
            "--set", f"data.on_bad_row={on_bad_row}", "--set", "model.patch_size=8"]


def _cfg(manifest, on_bad_row):
    return config_from_dict({}, [s for s in _settings(manifest, on_bad_row) if s != "--set"])


@pytest.mark.parametrize(("name", "reason"), [("junk.png", "cannot decode the image"),
                                              ("truncated.png", "cannot decode the image"),
                                              ("nopixels.dcm", "no pixel data")])
def test_each_bad_kind_is_a_data_error_naming_the_file(manifest, name, reason):
    with pytest.raises(DataError, match=reason) as info:
        read_image(manifest.parent / name)
    assert str(manifest.parent / name) in str(info.value)


def test_check_data_decodes_every_image_and_stops_at_the_first_bad_one(manifest, capsys):
    # Execute
    code = main(["check-data", *_settings(manifest, "error")])
    # Assert
    err = capsys.readouterr().err
    assert code == 2
    assert "row 6" in err and "junk.png" in err and "cannot read the image header" in err


def test_check_data_with_skip_drops_undecodable_files_and_counts_the_rest(manifest, capsys, caplog):
    # Execute
    with caplog.at_level(logging.WARNING):
        code = main(["check-data", *_settings(manifest, "skip")])
    # Assert
    captured = capsys.readouterr()
    counts = json.loads(captured.out)
    assert code == 0
    assert sum(split["images"] for split in counts.values()) == len(GOOD)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 3 of 7 images that do not decode" in warned
    assert all(name in warned for name, _, _ in BAD)
    assert "decoding images" in captured.err  # the progress bar


def test_decode_records_keeps_the_good_records_in_order(manifest):
    cfg = _cfg(manifest, "skip")
    result = decode_records(load_records(cfg.data), cfg.data, progress=False)
    assert sorted(r.image.name for r in result.records) == sorted(name for name, _, _ in GOOD)
    assert len(result.skipped) == len(BAD)


def test_training_with_skip_replaces_undecodable_items_instead_of_crashing(manifest, caplog):
    # Prepare
    cfg = _cfg(manifest, "skip")
    datasets = make_datasets(cfg.data, load_records(cfg.data), seed=0)
    # Execute: a whole pass over every split, as an epoch and its evaluation would make
    with caplog.at_level(logging.WARNING):
        batches = {
            split: list(DataLoader(ds, batch_size=2, collate_fn=collate_samples)) for split, ds in datasets.items()
        }
    # Assert
    assert sum(len(b) for b in batches["train"]) == 4  # 2 good + 2 replaced
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert all(name in warned for name, _, _ in BAD)
    assert datasets["train"].undecodable == {i for i, r in enumerate(datasets["train"].records)
                                             if r.image.name in {"junk.png", "truncated.png"}}


def test_training_without_skip_still_raises_a_data_error(manifest):
    cfg = _cfg(manifest, "error")
    train = make_datasets(cfg.data, load_records(cfg.data), seed=0)["train"]
    bad = next(i for i, r in enumerate(train.records) if r.image.name == "junk.png")
    with pytest.raises(DataError, match=r"junk\.png"):
        train[bad]


def test_a_dataset_of_only_bad_files_says_so(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_bad_files(root)
    rows = [[name, label, f"p{i}", "train"] for i, (name, label, _) in enumerate(BAD)]
    csv = write_csv(root / "manifest.csv", ["image", "label", "patient_id", "split"], rows)
    cfg = _cfg(csv, "skip")
    train = make_datasets(cfg.data, load_records(cfg.data), seed=0)["train"]
    with pytest.raises(DataError, match="none of the 3 images of this dataset can be loaded"):
        train[0]
    with pytest.raises(DataError, match="no usable images: all 3 failed to decode"):
        decode_records(load_records(cfg.data), cfg.data, progress=False)
