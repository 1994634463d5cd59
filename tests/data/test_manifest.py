import csv
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mtmedformer.data.manifest import read_manifest
from mtmedformer.errors import DataError

CLASSES = ("benign", "malignant")
H, W = 20, 30  # every test image is 30 pixels wide, 20 high
HEADER = ["image", "label", "mask", "boxes", "split"]


def _png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def _write_csv(folder: Path, header, *rows, name="manifest.csv") -> Path:
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _row(**cells) -> list[str]:
    return [cells.get(column, "") for column in HEADER]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / name, np.full((H, W), 100, dtype=np.uint8))
    lesion = np.zeros((H, W), dtype=np.uint8)
    lesion[3:12, 2:10] = 255
    _png(tmp_path / "a_mask.png", lesion)
    _png(tmp_path / "zero_mask.png", np.zeros((H, W), dtype=np.uint8))
    _png(tmp_path / "small_mask.png", np.zeros((10, 10), dtype=np.uint8))
    (tmp_path / "a.bmp").write_bytes(b"BM")
    return tmp_path


# ---------------------------------------------------------------------------------------------- bad rows
BAD_ROWS = {
    "missing image": (_row(image="missing.png"), "missing.png", ["image file not found", "relative to the CSV"]),
    "unsupported extension": (_row(image="a.bmp"), "a.bmp", ["unsupported image format '.bmp'", ".png, .jpg"]),
    "missing mask": (_row(image="a.png", mask="nomask.png"), "nomask.png", ["mask file not found"]),
    "mask size": (
        _row(image="a.png", mask="small_mask.png"),
        "small_mask.png",
        ["10x10 (WxH)", "is 30x20", "exactly the image's size"],
    ),
    "box outside": (_row(image="a.png", boxes="[[0, 0, 31, 5]]"), "a.png", ["outside", "0 <= x0 < x1 <= 30"]),
    "box x1 <= x0": (_row(image="a.png", boxes="[[5, 0, 5, 5]]"), "a.png", ["x1 <= x0", "top-left corner first"]),
    "box y1 <= y0": (_row(image="a.png", boxes="[[0, 9, 5, 2]]"), "a.png", ["y1 <= y0"]),
    "box NaN": (_row(image="a.png", boxes="[[0, 0, NaN, 5]]"), "a.png", ["NaN or infinite", "finite"]),
    "box infinite": (_row(image="a.png", boxes="[[0, 0, Infinity, 5]]"), "a.png", ["NaN or infinite"]),
    "unknown label": (
        _row(image="a.png", label="benin"),
        "a.png",
        ["unknown label 'benin'", "Did you mean 'benign'?", "data.classes"],
    ),
    "box of 3 numbers": (
        _row(image="a.png", boxes="[[1, 2, 3]]"),
        "a.png",
        ["not a list of 4 numbers", "[x0, y0, x1, y1]"],
    ),
    "box with a string": (_row(image="a.png", boxes='[[1, 2, "3", 4]]'), "a.png", ["not a list of 4 numbers"]),
    "boxes not JSON": (_row(image="a.png", boxes="1,2,3,4"), "a.png", ["not valid JSON", "[[10, 20, 50, 60]]"]),
    "boxes not a list": (_row(image="a.png", boxes='{"x": 1}'), "a.png", ["not a JSON list"]),
    "invalid split": (_row(image="a.png", split="training"), "a.png", ["Did you mean 'train'?", "Leave it empty"]),
    "from_mask without mask": (_row(image="a.png", boxes="from_mask"), "a.png", ["mask cell is empty"]),
    "empty image cell": (_row(label="benign"), "manifest.csv", ["image cell is empty"]),
    "wrong cell count": (["a.png", "benign"], "manifest.csv", ["2 cells but the header has 5", "quote"]),
}


@pytest.mark.parametrize(("row", "file_part", "fix_parts"), list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_bad_row_error_names_row_file_and_fix(folder, row, file_part, fix_parts):
    # Prepare
    csv_path = _write_csv(folder, HEADER, _row(image="b.png"), row)

    # Execute
    with pytest.raises(DataError) as info:
        read_manifest(csv_path, CLASSES)

    # Assert: the header is row 1, so the bad row is row 3
    message = str(info.value)
    assert "manifest.csv row 3" in message
    assert file_part in message
    for part in fix_parts:
        assert part in message


def test_duplicate_image_row_names_both_rows(folder):
    # Prepare
    csv_path = _write_csv(folder, HEADER, _row(image="a.png"), _row(image="c.png"), _row(image="./a.png"))

    # Execute
    with pytest.raises(DataError) as info:
        read_manifest(csv_path, CLASSES)

    # Assert
    message = str(info.value)
    assert message.startswith(f"{csv_path} row 4")
    for part in ("already listed at", "row 2", "a.png", "list each image once"):
        assert part in message


# ------------------------------------------------------------------------------------- whole-manifest errors
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("", "manifest is empty"),
        ("\n\n", "manifest is empty"),
        ("image,label\n", "no data rows"),
        ("path,label\na.png,benign\n", "no 'image' column"),
        ("image,lable\na.png,benign\n", "unknown column 'lable'. Did you mean 'label'?"),
        ("imge,label\na.png,benign\n", "Did you mean 'image'?"),
        ("image,label,label\na.png,benign,benign\n", "appears twice"),
        (b"image,label\na.png,b\xe9nin\n", "not UTF-8"),
    ],
)
def test_whole_manifest_errors(folder, content, expected):
    # Prepare
    csv_path = folder / "manifest.csv"
    if isinstance(content, bytes):
        csv_path.write_bytes(content)
    elif content is not None:
        csv_path.write_text(content, encoding="utf-8")

    # Execute / Assert: skip mode cannot skip these
    with pytest.raises(DataError) as info:
        read_manifest(csv_path, CLASSES, on_bad_row="skip")
    assert expected in str(info.value) and "manifest.csv" in str(info.value)


def test_patient_in_two_splits_raises_even_in_skip_mode(folder):
    # Prepare
    csv_path = _write_csv(folder, ["image", "patient_id", "split"], ["a.png", "P1", "train"], ["b.png", "P1", "test"])

    # Execute
    with pytest.raises(DataError) as info:
        read_manifest(csv_path, CLASSES, on_bad_row="skip")

    # Assert
    message = str(info.value)
    for part in ("patient 'P1'", "'train'", "'test'", "row 2", "row 3", "same split"):
        assert part in message


@pytest.mark.parametrize(
    ("kwargs", "expected"), [({"on_bad_row": "skp"}, "Did you mean 'skip'"), ({"classes": ()}, "non-empty")]
)
def test_bad_arguments_raise_value_error(folder, kwargs, expected):
    csv_path = _write_csv(folder, HEADER, _row(image="a.png"))
    arguments = {"classes": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=expected):
        read_manifest(csv_path, arguments.pop("classes"), **arguments)


# ---------------------------------------------------------------------------------------------- good rows
def test_annotation_states_are_read_as_documented(folder):
    # Prepare: fully annotated positive / nothing annotated / annotated negative
    header = [*HEADER, "patient_id", "site", "notes"]
    csv_path = _write_csv(
        folder,
        header,
        ["a.png", "malignant", "a_mask.png", "[[2, 3, 10, 12]]", "train", "P1", "S1", "dense breast"],
        ["b.png", "", "", "", "", "", "", ""],
        ["c.png", "benign", "zero_mask.png", "[]", "", "P3", "", ""],
    )

    # Execute
    result = read_manifest(csv_path, CLASSES, site="default-site")

    # Assert
    positive, unannotated, negative = result.records
    assert result.skipped == []
    assert positive.label == "malignant" and positive.masks == (folder / "a_mask.png",)
    assert positive.boxes == ((2.0, 3.0, 10.0, 12.0),) and not positive.boxes_from_mask
    assert (positive.split, positive.patient_id, positive.site) == ("train", "P1", "S1")
    assert positive.extra == {"notes": "dense breast"}
    assert positive.origin == f"{csv_path} row 2" and positive.image == folder / "a.png"
    assert (unannotated.label, unannotated.masks, unannotated.boxes, unannotated.split) == (None, None, None, None)
    assert not (unannotated.has_label or unannotated.has_mask or unannotated.has_boxes)
    assert unannotated.site == "default-site"
    assert negative.boxes == () and negative.masks == (folder / "zero_mask.png",)
    assert negative.has_label and negative.has_mask and negative.has_boxes


def test_patient_id_defaults_to_image_stem_with_a_warning(folder, caplog):
    # Prepare
    nib.save(nib.Nifti1Image(np.zeros((W, H), dtype=np.float32), np.eye(4)), folder / "scan.nii.gz")
    csv_path = _write_csv(folder, ["Image", " Label "], ["scan.nii.gz", "benign"], ["a.png", ""])

    # Execute
    with caplog.at_level(logging.WARNING, logger="mtmedformer.data.manifest"):
        records = read_manifest(csv_path, CLASSES).records

    # Assert: header names are matched case-insensitively; ".nii.gz" is one extension
    assert [r.patient_id for r in records] == ["scan", "a"]
    assert records[0].label == "benign"
    assert "one patient per image" in caplog.text


def test_several_masks_and_boxes_from_mask(folder):
    # Prepare
    csv_path = _write_csv(folder, HEADER, _row(image="a.png", mask="a_mask.png; zero_mask.png", boxes="from_mask"))

    # Execute
    (record,) = read_manifest(csv_path, CLASSES).records

    # Assert
    assert record.masks == (folder / "a_mask.png", folder / "zero_mask.png")
    assert record.boxes is None and record.boxes_from_mask and record.has_boxes


def test_box_touching_the_border_is_accepted(folder):
    csv_path = _write_csv(folder, HEADER, _row(image="a.png", boxes=f"[[0, 0, {W}, {H}], [1.5, 2.5, 3, 4]]"))
    (record,) = read_manifest(csv_path, CLASSES).records
    assert record.boxes == ((0.0, 0.0, float(W), float(H)), (1.5, 2.5, 3.0, 4.0))


# ---------------------------------------------------------------------------------------------- skip mode
def test_skip_mode_drops_bad_rows_with_one_summary_warning(folder, caplog):
    # Prepare: rows 3, 4 and 6 are bad
    csv_path = _write_csv(
        folder,
        HEADER,
        _row(image="a.png", label="benign"),
        _row(image="missing.png"),
        _row(image="b.png", label="benin"),
        _row(image="c.png", boxes="[]"),
        _row(image="a.png"),
    )

    # Execute
    with caplog.at_level(logging.WARNING, logger="mtmedformer.data.manifest"):
        result = read_manifest(csv_path, CLASSES, on_bad_row="skip")

    # Assert
    assert [r.image.name for r in result.records] == ["a.png", "c.png"]
    assert len(result.skipped) == 3
    assert "row 3" in result.skipped[0] and "missing.png" in result.skipped[0]
    assert "row 4" in result.skipped[1] and "Did you mean 'benign'" in result.skipped[1]
    assert "row 6" in result.skipped[2] and "already listed" in result.skipped[2]
    summaries = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(summaries) == 1 and summaries[0].levelno == logging.WARNING
    assert "skipped 3 of 5 rows" in summaries[0].getMessage() and "missing.png" in summaries[0].getMessage()


def test_skip_mode_with_every_row_bad_raises(folder):
    csv_path = _write_csv(folder, HEADER, _row(image="missing.png"), _row(image="a.bmp"))
    with pytest.raises(DataError, match="no usable rows: all 2 data rows were skipped"):
        read_manifest(csv_path, CLASSES, on_bad_row="skip")
