import logging
from pathlib import Path

import pytest

from mtmedformer.data.loaders import load_rsna
from mtmedformer.errors import ConfigError, DataError
from tests.data.fixtures_native import build_rsna

CLASSES = ("normal", "pneumonia")
LABELS = "stage_2_train_labels.csv"
POSITIVE = [("pos", "10", "12", "20", "8.5", "1"), ("pos", "30", "2", "4", "6", "1")]
NEGATIVE = [("neg", "", "", "", "", "0")]
SHAPES = {"pos": (48, 64), "neg": (32, 32)}


def test_happy_path_boxes_labels_and_class_info(tmp_path: Path) -> None:
    # Prepare
    class_rows = [("pos", "Lung Opacity"), ("pos", "Lung Opacity"), ("neg", "No Lung Opacity / Not Normal")]
    build_rsna(tmp_path, [POSITIVE[0], *NEGATIVE, POSITIVE[1]], SHAPES, class_rows)

    # Execute
    records = load_rsna(tmp_path, CLASSES)

    # Assert
    pos, neg = records
    assert pos.image == tmp_path / "stage_2_train_images" / "pos.dcm"
    assert (pos.patient_id, pos.label, pos.split, pos.masks) == ("pos", "pneumonia", None, None)
    assert pos.boxes == ((10.0, 12.0, 30.0, 20.5), (30.0, 2.0, 34.0, 8.0))
    assert not pos.boxes_from_mask
    assert pos.extra == {"detailed_class": "Lung Opacity"}
    assert pos.origin == f"{LABELS} row 2 (+1 rows)"
    assert (neg.label, neg.boxes, neg.has_boxes) == ("normal", (), True)
    assert neg.extra == {"detailed_class": "No Lung Opacity / Not Normal"}


def test_class_info_is_optional(tmp_path: Path) -> None:
    build_rsna(tmp_path, [*POSITIVE, *NEGATIVE], SHAPES)

    records = load_rsna(tmp_path, CLASSES)

    assert [r.extra for r in records] == [{}, {}]


def test_label_map_onto_other_class_names(tmp_path: Path) -> None:
    build_rsna(tmp_path, [*POSITIVE, *NEGATIVE], SHAPES)

    records = load_rsna(tmp_path, ("healthy", "sick"), label_map={"0": "healthy", "1": "sick"})

    assert [r.label for r in records] == ["sick", "healthy"]


@pytest.mark.parametrize(
    ("rows", "shapes", "match"),
    [
        ([*POSITIVE, ("pos", "", "", "", "", "0")], SHAPES, f"{LABELS} row 2.*both Target 0 and Target 1 rows"),
        ([("pos", "a", "1", "2", "3", "1")], SHAPES, f"{LABELS} row 2: x, y, width, height must be numbers"),
        ([("pos", "1", "1", "0", "3", "1")], SHAPES, "width, height > 0"),
        ([("pos", "1", "1", "nan", "3", "1")], SHAPES, "finite values"),
        ([("pos", "", "", "", "", "1")], SHAPES, f"{LABELS} row 2: a Target 1 row needs a box.*set Target to 0"),
        ([("neg", "1", "1", "2", "3", "0")], SHAPES, "a Target 0 row .* must leave x, y, width, height empty"),
        ([("neg", "", "", "", "", "2")], SHAPES, "Target must be 0 or 1, got '2'"),
        ([*NEGATIVE], {}, f"{LABELS} row 2, file .*neg.dcm: the DICOM of patient neg is missing"),
        ([("pos", "50", "10", "20", "5", "1")], SHAPES, r"file .*pos.dcm: box \(50.0, 10.0, 70.0, 15.0\).*64x48"),
        ([("pos", "1", "40", "2", "9", "1")], SHAPES, "lies outside the 64x48 .* image"),
    ],
)
def test_bad_rows_name_row_and_fix(tmp_path: Path, rows: list, shapes: dict, match: str) -> None:
    build_rsna(tmp_path, rows, shapes)

    with pytest.raises(DataError, match=match) as info:
        load_rsna(tmp_path, CLASSES)

    assert "set on_bad_row: skip" in str(info.value)


@pytest.mark.parametrize(
    ("class_rows", "match"),
    [
        ([("pos", "Normal")], r"stage_2_detailed_class_info.csv row 2: patient pos has Target 1 .* class 'Normal'"),
        ([("pos", "Opacity")], "unknown class 'Opacity'"),
        ([("pos", "Lung Opacity"), ("pos", "Normal")], "row 3: patient pos is 'Normal' here but 'Lung Opacity'"),
    ],
)
def test_class_info_inconsistent(tmp_path: Path, class_rows: list, match: str) -> None:
    build_rsna(tmp_path, POSITIVE, SHAPES, class_rows)

    with pytest.raises(DataError, match=match):
        load_rsna(tmp_path, CLASSES)


def test_skip_mode_drops_bad_patients_with_one_warning(tmp_path: Path, caplog) -> None:
    rows = [*POSITIVE, *NEGATIVE, ("bad", "x", "1", "1", "1", "1"), ("gone", "", "", "", "", "0")]
    build_rsna(tmp_path, rows, {**SHAPES, "bad": (32, 32)})

    with caplog.at_level(logging.WARNING):
        records = load_rsna(tmp_path, CLASSES, on_bad_row="skip")

    assert [r.patient_id for r in records] == ["pos", "neg"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 2 bad" in warning.getMessage() and "gone.dcm" in warning.getMessage()


@pytest.mark.parametrize("missing", ["stage_2_train_labels.csv", "stage_2_train_images"])
def test_wrong_root_lists_expected_and_found(tmp_path: Path, missing: str) -> None:
    build_rsna(tmp_path, NEGATIVE, SHAPES)
    target = tmp_path / missing
    if target.is_dir():
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
    else:
        target.unlink()

    with pytest.raises(DataError, match=r"not an RSNA Pneumonia root: expected stage_2_train_labels.csv and .*found"):
        load_rsna(tmp_path, CLASSES)


def test_missing_column(tmp_path: Path) -> None:
    build_rsna(tmp_path, NEGATIVE, SHAPES)
    (tmp_path / LABELS).write_text("patientId,x,y,w,h,Target\nneg,,,,,0\n")

    with pytest.raises(DataError, match=rf"{LABELS} row 1.*missing column\(s\) \['width', 'height'\]"):
        load_rsna(tmp_path, CLASSES)


@pytest.mark.parametrize(
    ("classes", "kwargs"),
    [(("normal", "opacity"), {}), (CLASSES, {"label_map": {"1": "pneumonia"}}), (CLASSES, {"on_bad_row": "warn"})],
)
def test_bad_options(tmp_path: Path, classes: tuple, kwargs: dict) -> None:
    build_rsna(tmp_path, NEGATIVE, SHAPES)

    with pytest.raises(ConfigError):
        load_rsna(tmp_path, classes, **kwargs)
