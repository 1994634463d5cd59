import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from torch.utils.data import DataLoader

from mtmedformer import TASKS
from mtmedformer.data.batch import collate_samples
from mtmedformer.data.boxes import boxes_from_mask
from mtmedformer.data.dataset import MedicalImageDataset
from mtmedformer.data.image_io import read_image
from mtmedformer.data.manifest import read_manifest
from mtmedformer.data.records import Record
from mtmedformer.data.validate import image_shape
from mtmedformer.errors import DataError

CLASSES = ("benign", "malignant")
H, W = 20, 30
RECT = (18, 3, 27, 9)  # (x0, y0, x1, y1): off-centre, in the right half of a 30 x 20 image


def _rect_array(low: float, high: float, dtype) -> np.ndarray:
    x0, y0, x1, y1 = RECT
    array = np.full((H, W), low, dtype=np.float64)
    array[y0:y1, x0:x1] = high
    return array.astype(dtype)


def _dicom(path: Path, pixels: np.ndarray, *, slope: float, intercept: float, photometric: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_image(folder: Path, kind: str) -> Path:
    """Write the RECT test image in format ``kind``; the rectangle is always *displayed* bright."""
    if kind == "png8":
        path = folder / "img.png"
        Image.fromarray(_rect_array(40, 220, np.uint8)).save(path)
    elif kind == "png16":
        path = folder / "img16.png"
        Image.fromarray(_rect_array(1000, 60000, np.uint16)).save(path)
    elif kind == "rgb":
        path = folder / "rgb.png"
        Image.fromarray(np.stack([_rect_array(40, 220, np.uint8)] * 3, axis=-1), mode="RGB").save(path)
    elif kind == "jpeg":
        path = folder / "img.jpg"
        Image.fromarray(_rect_array(40, 220, np.uint8)).save(path, quality=95)
    elif kind == "dicom_monochrome1":  # MONOCHROME1: low stored values display bright
        path = folder / "img.dcm"
        _dicom(path, _rect_array(3000, 200, np.uint16), slope=2.0, intercept=-1024.0, photometric="MONOCHROME1")
    elif kind == "nifti":
        path = folder / "img.nii.gz"
        nib.save(nib.Nifti1Image(_rect_array(0, 500, np.float32).T, np.eye(4)), path)  # NIfTI axes: (x, y)
    else:
        raise AssertionError(kind)
    return path


def _write_csv(folder: Path, header, *rows) -> Path:
    path = folder / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def _mask_png(path: Path, *rects) -> Path:
    mask = np.zeros((H, W), dtype=np.uint8)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(path)
    return path


FORMATS = ["png8", "png16", "rgb", "jpeg", "dicom_monochrome1", "nifti"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_loads_with_image_mask_and_box_aligned(tmp_path, kind):
    # Prepare: image size 30 keeps the scale at 1 and pads (30 - 20) // 2 = 5 rows above
    image = _write_image(tmp_path, kind)
    _mask_png(tmp_path / "mask.png", RECT)
    csv_path = _write_csv(
        tmp_path, ["image", "label", "mask", "boxes"], [image.name, "malignant", "mask.png", str([list(RECT)])]
    )
    dataset = MedicalImageDataset(read_manifest(csv_path, CLASSES).records, CLASSES, 30)
    x0, y0, x1, y1 = RECT
    expected = [x0, y0 + 5, x1, y1 + 5]

    # Execute
    sample = dataset[0]

    # Assert
    assert sample["image"].shape == sample["mask"].shape == (1, 30, 30)
    assert sample["image"].dtype == torch.float32 and 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    torch.testing.assert_close(sample["boxes"], torch.tensor([expected], dtype=torch.float32))
    np.testing.assert_array_equal(boxes_from_mask(sample["mask"][0].numpy()), [expected])
    np.testing.assert_allclose(boxes_from_mask(sample["image"][0].numpy() > 0.5), [expected], atol=1.0)
    assert (sample["label"], sample["has_label"], sample["has_mask"], sample["has_boxes"]) == (1, True, True, True)


@pytest.mark.parametrize("kind", FORMATS)
def test_header_shape_matches_decoded_shape(tmp_path, kind):
    path = _write_image(tmp_path, kind)
    assert image_shape(path) == read_image(path).shape == (H, W)


def test_dicom_rescale_and_monochrome1_are_applied(tmp_path):
    # Prepare
    path = _write_image(tmp_path, "dicom_monochrome1")
    x0, y0, _, _ = RECT

    # Execute
    raw = read_image(path)

    # Assert: stored 3000 / 200 -> rescaled 4976 / -624 -> inverted: background -624, rectangle 4976
    assert raw[0, 0] == pytest.approx(-624.0) and raw[y0, x0] == pytest.approx(4976.0)


def test_not_annotated_and_annotated_negative_stay_distinct_through_collate(tmp_path):
    # Prepare: annotated negative / not annotated / annotated positive
    for name in ("neg.png", "none.png", "pos.png"):
        Image.fromarray(_rect_array(40, 220, np.uint8)).save(tmp_path / name)
    _mask_png(tmp_path / "empty_mask.png")
    _mask_png(tmp_path / "mask.png", RECT)
    csv_path = _write_csv(
        tmp_path,
        ["image", "label", "mask", "boxes"],
        ["neg.png", "benign", "empty_mask.png", "[]"],
        ["none.png", "", "", ""],
        ["pos.png", "malignant", "mask.png", str([list(RECT)])],
    )
    dataset = MedicalImageDataset(read_manifest(csv_path, CLASSES).records, CLASSES, 32)

    # Execute
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_samples)))

    # Assert
    assert batch.label.tolist() == [0, -1, 1]
    assert batch.has_label.tolist() == [True, False, True]
    assert batch.has_mask.tolist() == [True, False, True]
    assert batch.has_boxes.tolist() == [True, False, True]
    assert [tuple(b.shape) for b in batch.boxes] == [(0, 4), (0, 4), (1, 4)]
    assert batch.mask[0].sum() == 0 and batch.mask[1].sum() == 0 and batch.mask[2].sum() > 0
    assert batch.image.shape == (3, 1, 32, 32)


def test_masks_are_or_merged_and_boxes_derived_from_the_merged_mask(tmp_path):
    # Prepare: two mask files with one lesion each
    Image.fromarray(_rect_array(40, 220, np.uint8)).save(tmp_path / "img.png")
    _mask_png(tmp_path / "m1.png", (2, 2, 6, 5))
    _mask_png(tmp_path / "m2.png", RECT)
    record = Record(
        image=tmp_path / "img.png",
        patient_id="p",
        masks=(tmp_path / "m1.png", tmp_path / "m2.png"),
        boxes_from_mask=True,
        origin="test row 2",
    )

    # Execute
    sample = MedicalImageDataset([record], CLASSES, 30)[0]

    # Assert: boxes in the padded image (5 rows above)
    torch.testing.assert_close(sample["boxes"], torch.tensor([[2.0, 7.0, 6.0, 10.0], [18.0, 8.0, 27.0, 14.0]]))
    assert sample["mask"].sum() == 4 * 3 + 9 * 6 and sample["has_boxes"] and sample["label"] == -1


def test_corrupt_image_body_is_reported_at_load_naming_the_row(tmp_path):
    # Prepare: a valid PNG header followed by a truncated body; the manifest only reads the header
    noise = np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "img.png")
    data = (tmp_path / "img.png").read_bytes()
    (tmp_path / "img.png").write_bytes(data[: len(data) // 2])
    _mask_png(tmp_path / "mask.png", RECT)
    csv_path = _write_csv(tmp_path, ["image", "mask"], ["img.png", "mask.png"])
    dataset = MedicalImageDataset(read_manifest(csv_path, CLASSES).records, CLASSES, 32)

    # Execute
    with pytest.raises(DataError) as info:
        dataset[0]

    # Assert
    message = str(info.value)
    assert "manifest.csv row 2" in message and "img.png" in message and "cannot decode" in message


@pytest.mark.parametrize(
    ("record_kwargs", "expected"),
    [
        ({"boxes": ((0.0, 0.0, 31.0, 5.0),)}, "outside the 30x20"),
        ({"masks": ("small_mask.png",)}, "exactly the image's size"),
    ],
)
def test_bad_record_is_reported_at_load_naming_its_origin(tmp_path, record_kwargs, expected):
    # Prepare: records built by a loader, not checked by the manifest reader
    Image.fromarray(_rect_array(40, 220, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "small_mask.png")
    if "masks" in record_kwargs:
        record_kwargs = {"masks": tuple(tmp_path / m for m in record_kwargs["masks"])}
    record = Record(image=tmp_path / "img.png", patient_id="p", origin="loader.csv row 9", **record_kwargs)

    # Execute
    with pytest.raises(DataError) as info:
        MedicalImageDataset([record], CLASSES, 32)[0]

    # Assert
    assert str(info.value).startswith("loader.csv row 9, file ") and expected in str(info.value)


def test_task_and_label_counts():
    # Prepare
    records = [
        Record(image=Path("a.png"), patient_id="a", label="benign", masks=(Path("m.png"),), boxes_from_mask=True),
        Record(image=Path("b.png"), patient_id="b", label="benign", boxes=()),
        Record(image=Path("c.png"), patient_id="c"),
    ]

    # Execute
    dataset = MedicalImageDataset(records, CLASSES, 32)

    # Assert
    assert dataset.task_counts() == {"classification": 2, "segmentation": 1, "detection": 2}
    assert tuple(dataset.task_counts()) == TASKS
    assert dataset.label_counts() == {"benign": 2, "malignant": 0}


def test_training_augmentation_depends_on_seed_epoch_and_index_only(tmp_path):
    # Prepare
    Image.fromarray(_rect_array(40, 220, np.uint8)).save(tmp_path / "img.png")
    records = [Record(image=tmp_path / "img.png", patient_id=str(i), boxes=(RECT,)) for i in range(4)]
    dataset = MedicalImageDataset(records, CLASSES, 32, train=True, seed=3)

    # Execute
    forward = [dataset[i]["image"] for i in range(4)]
    backward = [dataset[i]["image"] for i in reversed(range(4))][::-1]
    dataset.set_epoch(1)
    next_epoch = [dataset[i]["image"] for i in range(4)]

    # Assert
    for a, b in zip(forward, backward, strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(forward, next_epoch, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"classes": ()}, ValueError, "non-empty"),
        ({"window": (99.0, 1.0)}, ValueError, "low < high"),
        ({"image_size": 0}, ValueError, "image_size"),
        (
            {"records": [Record(image=Path("a.png"), patient_id="a", label="benin", origin="m.csv row 2")]},
            DataError,
            "m.csv row 2",
        ),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, expected):
    arguments = {"records": [], "classes": CLASSES, "image_size": 32, **kwargs}
    with pytest.raises(error, match=expected):
        MedicalImageDataset(
            arguments.pop("records"), arguments.pop("classes"), arguments.pop("image_size"), **arguments
        )
