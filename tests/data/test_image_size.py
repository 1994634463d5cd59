"""A pixel limit with a clear error instead of PIL's DecompressionBombError; large images shrunk while decoding."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mtmedformer.cli import main
from mtmedformer.config import config_from_dict
from mtmedformer.data import image_io
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.image_io import read_image, read_mask, reduced_shape, reduction_factor
from mtmedformer.data.records import Record
from mtmedformer.data.validate import image_shape
from mtmedformer.errors import ConfigError, DataError
from tests.data.fixtures_native import write_csv, write_dicom

CLASSES = ("benign", "malignant")


def png_header_only(path, width, height):
    """A PNG whose header claims ``width x height`` 8-bit grey pixels, with almost no pixel data behind it."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_an_image_above_the_limit_is_a_data_error_naming_the_file_and_the_setting(tmp_path):
    # Prepare: 200 megapixels, above PIL's own bomb threshold too
    path = png_header_only(tmp_path / "huge.png", 20000, 10000)
    # Execute / Assert
    with pytest.raises(DataError, match=r"20000x10000 = 200,000,000 pixels, above data\.max_image_pixels") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_the_header_check_of_the_manifest_reads_a_huge_size_without_a_pil_error(tmp_path):
    assert image_shape(png_header_only(tmp_path / "huge.png", 20000, 10000)) == (10000, 20000)


def test_check_data_reports_a_too_large_image_as_one_line(tmp_path, capsys):
    # Prepare
    root = tmp_path / "data"
    root.mkdir()
    png_header_only(root / "huge.png", 20000, 10000)
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(root / "ok.png")
    csv = write_csv(root / "m.csv", ["image", "label", "patient_id", "split"],
                    [["ok.png", "benign", "a", "train"], ["huge.png", "malignant", "b", "train"]])
    # Execute
    code = main(["check-data", "--set", "data.source=manifest", "--set", f"data.path={csv}",
                 "--set", "data.image_size=32", "--set", "model.patch_size=8"])
    # Assert
    err = capsys.readouterr().err
    assert code == 2 and "row 3" in err and "huge.png" in err and "data.max_image_pixels" in err
    assert "DecompressionBomb" not in err


def test_the_limit_is_configurable_and_applies_to_dicom(tmp_path):
    # Prepare
    dicom = write_dicom(tmp_path / "a.dcm", np.zeros((64, 64), dtype=np.uint16))
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(png)
    # Execute / Assert
    for path in (dicom, png):
        with pytest.raises(DataError, match=r"64x64 = 4,096 pixels, above data\.max_image_pixels = 4,000"):
            read_image(path, max_pixels=4000)
        assert read_image(path, max_pixels=4096).shape == (64, 64)
    with pytest.raises(ConfigError, match=r"data\.max_image_pixels: must be >= image_size\^2"):
        config_from_dict({"data": {"max_image_pixels": 100}})


def test_reduction_factor_keeps_the_longest_side_at_twice_the_target(monkeypatch):
    assert reduction_factor((8000, 8000), 128) == 31
    assert reduction_factor((4096, 4096), 128) == 1  # not above REDUCE_ABOVE_PIXELS: full resolution
    assert reduction_factor((8000, 8000), None) == 1
    assert reduced_shape((8000, 6001), 31) == (259, 194)


def _scene(tmp_path, fmt, dtype=np.uint8):
    """A 200x300 image with a bright rectangle, its mask, and the rectangle's box."""
    rng = np.random.default_rng(0)
    high = 255 if dtype == np.uint8 else 4000
    image = (rng.random((200, 300)) * high * 0.3).astype(dtype)
    image[60:120, 150:240] = high
    mask = np.zeros((200, 300), dtype=np.uint8)
    mask[60:120, 150:240] = 255
    path = tmp_path / f"img.{fmt}"
    Image.fromarray(image).save(path, **({"quality": 95} if fmt == "jpg" else {}))
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return Record(image=path, patient_id="p", label="benign", masks=(tmp_path / "mask.png",),
                  boxes=((150.0, 60.0, 240.0, 120.0),))


@pytest.mark.parametrize(("fmt", "dtype"), [("png", np.uint8), ("png", np.uint16), ("jpg", np.uint8)])
def test_a_large_image_is_shrunk_while_decoding_with_its_mask_and_boxes(tmp_path, monkeypatch, fmt, dtype):
    # Prepare: lower the threshold so that a small image counts as large
    record = _scene(tmp_path, fmt, dtype)
    dataset = MedicalImageDataset([record], CLASSES, 32)
    monkeypatch.setattr(image_io, "REDUCE_ABOVE_PIXELS", 200 * 300 + 1)
    full = dataset.load_record(record)
    full_sample = dataset[0]
    monkeypatch.setattr(image_io, "REDUCE_ABOVE_PIXELS", 1000)
    # Execute
    shrunk = dataset.load_record(record)
    shrunk_sample = dataset[0]
    # Assert: factor 300 // 64 = 4
    assert full["image"].shape == (200, 300)
    assert shrunk["image"].shape == shrunk["mask"].shape == reduced_shape((200, 300), 4) == (50, 75)
    # nearest sampling keeps source rows/columns 4i + 2: rows 15..29 and columns 37..59 of the lesion
    assert shrunk["mask"][15:30, 37:60].all() and shrunk["mask"].sum() == 15 * 23
    np.testing.assert_allclose(shrunk["boxes"], [[37.5, 15.0, 60.0, 30.0]])
    # The model sees nearly the same sample: both paths end in the same 32 x 32 resize.
    assert torch.allclose(shrunk_sample["boxes"], full_sample["boxes"], atol=1e-4)
    assert (shrunk_sample["mask"] == full_sample["mask"]).float().mean() > 0.97
    assert (shrunk_sample["image"] - full_sample["image"]).abs().mean() < 0.06


def test_a_mask_of_another_size_is_still_caught_when_shrunk(tmp_path, monkeypatch):
    record = _scene(tmp_path, "png")
    Image.fromarray(np.zeros((199, 299), dtype=np.uint8)).save(tmp_path / "mask.png")  # shrinks to 50 x 75
    monkeypatch.setattr(image_io, "REDUCE_ABOVE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"mask is 299x199 \(WxH\) but its image is 300x200"):
        MedicalImageDataset([record], CLASSES, 32).load_record(record)


def test_mask_shrinking_keeps_it_binary(tmp_path):
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:50, 20:90] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    shrunk = read_mask(tmp_path / "m.png", reduce=4)
    assert shrunk.dtype == bool and shrunk.shape == (25, 25)
    assert shrunk[5:10, 8:20].all() and not shrunk[15:, :].any()
