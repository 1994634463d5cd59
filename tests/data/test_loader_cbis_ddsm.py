import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtmedformer.data.loaders import load_cbis_ddsm
from mtmedformer.data.loaders.cbis_ddsm import csv_names
from mtmedformer.errors import ConfigError, DataError
from tests.data.fixtures_native import (
    CbisImage,
    CbisLesion,
    build_cbis,
    flat_pixels,
    read_rows,
    write_csv,
    write_dicom,
)

CLASSES = ("benign", "malignant")
MASS_CSVS = [name for name, _ in csv_names("mass")]
TRAIN_CSV = "mass_case_description_train_set.csv"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("under_cbis_folder", [True, False])
def test_happy_path_merges_abnormalities_of_one_image(tmp_path: Path, under_cbis_folder: bool) -> None:
    # Prepare: image 1 has a benign and a malignant lesion (file order swapped for the second);
    # its full image is MONOCHROME1 with rescale tags, which the loader must not care about.
    two = CbisImage(
        patient="P_00001",
        lesions=[
            CbisLesion(1, "BENIGN", rect=(2, 2, 8, 8)),
            CbisLesion(2, "MALIGNANT", rect=(20, 20, 30, 30), mask_first=False),
        ],
        photometric="MONOCHROME1",
        rescale=(2.0, -100.0),
    )
    test = CbisImage(patient="P_00002", split="Test", side="RIGHT", view="MLO",
                     lesions=[CbisLesion(1, "BENIGN_WITHOUT_CALLBACK")])  # fmt: skip
    written = build_cbis(tmp_path, [two, test], under_cbis_folder=under_cbis_folder, csvs=MASS_CSVS)

    # Execute
    records = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")

    # Assert
    assert len(records) == 2
    first, second = records
    assert first.image == written[two.subject]["full"]
    assert first.masks == (written[two.subject]["mask1"], written[two.subject]["mask2"])
    assert (first.label, first.split, first.patient_id) == ("malignant", "train", "P_00001")
    assert first.boxes is None and first.boxes_from_mask and first.has_boxes
    assert first.extra == {"abnormality_type": "mass", "view": "CC", "laterality": "LEFT", "density": "3",
                           "subject": "Mass-Training_P_00001_LEFT_CC"}  # fmt: skip
    assert first.origin == f"{TRAIN_CSV} row 2 (+1 rows)"
    assert (second.label, second.split, second.patient_id) == ("benign", "test", "P_00002")
    assert second.masks == (written[test.subject]["mask1"],)


@pytest.mark.parametrize(
    ("pathologies", "expected"),
    [
        (["BENIGN"], "benign"),
        (["BENIGN_WITHOUT_CALLBACK", "BENIGN"], "benign"),
        (["BENIGN", "MALIGNANT"], "malignant"),
        (["MALIGNANT", "BENIGN_WITHOUT_CALLBACK"], "malignant"),
    ],
)
def test_image_is_malignant_if_any_abnormality_is(tmp_path: Path, pathologies: list[str], expected: str) -> None:
    lesions = [CbisLesion(i + 1, p, rect=(2 + 10 * i, 2, 8 + 10 * i, 8)) for i, p in enumerate(pathologies)]
    build_cbis(tmp_path, [CbisImage(lesions=lesions)], csvs=MASS_CSVS)

    (record,) = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")

    assert record.label == expected
    assert len(record.masks) == len(pathologies)


@pytest.mark.parametrize("mask_first", [True, False])
@pytest.mark.parametrize("separate_series", [True, False])
@pytest.mark.parametrize("crop_shape", [(10, 8), None])  # None: crop as large as the image -> pixels decide
def test_roi_mask_told_from_crop_by_content(
    tmp_path: Path, mask_first: bool, separate_series: bool, crop_shape: tuple[int, int] | None
) -> None:
    lesion = CbisLesion(mask_first=mask_first, separate_series=separate_series, crop_shape=crop_shape)
    image = CbisImage(lesions=[lesion])
    written = build_cbis(tmp_path, [image], csvs=MASS_CSVS)

    (record,) = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")

    assert record.masks == (written[image.subject]["mask1"],)


def test_csv_uid_paths_differ_from_download_and_cells_are_stripped(tmp_path: Path) -> None:
    # Prepare: the CSV names UID folders that do not exist; pad every cell with spaces and newlines.
    image = CbisImage()
    written = build_cbis(tmp_path, [image], csvs=MASS_CSVS)
    header, rows = read_rows(tmp_path / TRAIN_CSV)
    assert not (tmp_path / "CBIS-DDSM" / rows[0][11]).exists()
    write_csv(tmp_path / TRAIN_CSV, [f" {h} " for h in header], [[f" {c}\n" for c in row] for row in rows])

    (record,) = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")

    assert record.patient_id == "P_00001"
    assert record.image == written[image.subject]["full"]


def test_literal_csv_path_used_when_subject_folder_is_ambiguous(tmp_path: Path) -> None:
    image = CbisImage()
    build_cbis(tmp_path, [image], csvs=MASS_CSVS)
    _, rows = read_rows(tmp_path / TRAIN_CSV)
    literal = write_dicom(tmp_path / "CBIS-DDSM" / rows[0][11], flat_pixels(image.shape))

    (record,) = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")

    assert record.image == literal


@pytest.mark.parametrize(("abnormality", "subjects"), [
    ("mass", {"Mass-Training_P_00001_LEFT_CC"}),
    ("calc", {"Calc-Training_P_00003_RIGHT_CC"}),
    ("both", {"Mass-Training_P_00001_LEFT_CC", "Calc-Training_P_00003_RIGHT_CC"}),
])  # fmt: skip
def test_abnormality_option_chooses_csvs(tmp_path: Path, abnormality: str, subjects: set[str]) -> None:
    images = [CbisImage(), CbisImage(patient="P_00003", kind="Calc", side="RIGHT")]
    build_cbis(tmp_path, images)

    records = load_cbis_ddsm(tmp_path, CLASSES, abnormality=abnormality)

    assert {r.extra["subject"] for r in records} == subjects
    types = {r.extra["subject"].split("-")[0]: r.extra["abnormality_type"] for r in records}
    assert types.get("Calc", "calcification") == "calcification" and types.get("Mass", "mass") == "mass"


def test_calc_only_needs_only_calc_csvs(tmp_path: Path) -> None:
    build_cbis(tmp_path, [CbisImage(kind="Calc")], csvs=[name for name, _ in csv_names("calc")])

    records = load_cbis_ddsm(tmp_path, CLASSES, abnormality="calc")

    assert len(records) == 1


# --------------------------------------------------------------------------------------------------- errors


def test_wrong_root_lists_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()

    with pytest.raises(DataError) as info:
        load_cbis_ddsm(tmp_path, CLASSES)

    message = str(info.value)
    assert "not a CBIS-DDSM root" in message and "calc_case_description_test_set.csv" in message
    assert "found images/" in message


def test_missing_csv_of_chosen_type_is_named(tmp_path: Path) -> None:
    build_cbis(tmp_path, [CbisImage()], csvs=MASS_CSVS)

    with pytest.raises(DataError, match=r"missing \['calc_case_description_train_set.csv', 'calc_case"):
        load_cbis_ddsm(tmp_path, CLASSES, abnormality="both")


def test_csvs_without_dicom_tree(tmp_path: Path) -> None:
    build_cbis(tmp_path, [CbisImage()], csvs=MASS_CSVS)
    shutil.rmtree(tmp_path / "CBIS-DDSM")

    with pytest.raises(DataError, match="no 'Mass-\\*'/'Calc-\\*' Subject folders"):
        load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"abnormality": "masss"}, "Did you mean 'mass'"),
        ({"on_bad_row": "ignore"}, "on_bad_row must be one of"),
        ({"cross_split_patients": "merge"}, "cross_split_patients must be one of"),
        ({"label_map": {"MALIGNANT": "malignant"}}, "must map exactly"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict, match: str) -> None:
    build_cbis(tmp_path, [CbisImage()])

    with pytest.raises(ConfigError, match=match):
        load_cbis_ddsm(tmp_path, CLASSES, **kwargs)


def test_classes_must_hold_mapped_names(tmp_path: Path) -> None:
    build_cbis(tmp_path, [CbisImage()])

    with pytest.raises(ConfigError, match=r"need the class names \['malignant'\].*add them to data.classes"):
        load_cbis_ddsm(tmp_path, ("benign", "cancer"))


def _edit_cell(root: Path, column: int, value: str, row: int = 0) -> None:
    header, rows = read_rows(root / TRAIN_CSV)
    rows[row][column] = value
    write_csv(root / TRAIN_CSV, header, rows)


def _break_missing_roi(root: Path, image: CbisImage) -> None:
    shutil.rmtree(root / "CBIS-DDSM" / f"{image.subject}_1")


def _break_mask_size(root: Path, image: CbisImage) -> None:
    mask = next((root / "CBIS-DDSM" / f"{image.subject}_1").rglob("*ROI mask*"))
    for path in mask.glob("*.dcm"):
        path.unlink()
    write_dicom(mask / "1-1.dcm", flat_pixels((47, 40)))


def _break_two_binary(root: Path, image: CbisImage) -> None:
    folder = next((root / "CBIS-DDSM" / f"{image.subject}_1").rglob("*ROI mask*"))
    write_dicom(folder / "1-3.dcm", flat_pixels(image.shape, 0, np.uint8))


def _break_missing_full(root: Path, image: CbisImage) -> None:
    shutil.rmtree(root / "CBIS-DDSM" / image.subject)


@pytest.mark.parametrize(
    ("breaker", "match"),
    [
        (lambda root, image: _edit_cell(root, 9, "MAYBE"), f"{TRAIN_CSV} row 2: unknown pathology 'MAYBE'"),
        (lambda root, image: _edit_cell(root, 0, ""), f"{TRAIN_CSV} row 2: the 'patient id' cell is empty"),
        (lambda root, image: _edit_cell(root, 3, "MLO", row=1), f"{TRAIN_CSV} row 3: 'image view' is 'MLO'"),
        (lambda root, image: _edit_cell(root, 4, "1", row=1), r"abnormality id\(s\) \['1'\].*remove the duplicate"),
        (_break_missing_roi, f"{TRAIN_CSV} row 2: no DICOM found for the ROI Subject folder.*download the ROI series"),
        (_break_mask_size, f"{TRAIN_CSV} row 2: cannot identify the ROI mask.*none has the full image's size 40x48"),
        (_break_two_binary, "2 binary DICOMs have the full image's size"),
        (_break_missing_full, f"{TRAIN_CSV} row 2: the full-image Subject folder 'Mass-Training_P_00001_LEFT_CC'"),
    ],
)
def test_bad_row_errors_name_row_and_fix(tmp_path: Path, breaker, match: str) -> None:
    image = CbisImage(lesions=[CbisLesion(1, crop_shape=None), CbisLesion(2, rect=(20, 20, 30, 30))])
    build_cbis(tmp_path, [image], csvs=MASS_CSVS)
    breaker(tmp_path, image)

    with pytest.raises(DataError, match=match):
        load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")


def test_missing_column_names_header_row(tmp_path: Path) -> None:
    build_cbis(tmp_path, [CbisImage()], csvs=MASS_CSVS)
    header, rows = read_rows(tmp_path / TRAIN_CSV)
    write_csv(tmp_path / TRAIN_CSV, header[:-1], [r[:-1] for r in rows])

    with pytest.raises(DataError, match=rf"{TRAIN_CSV} row 1.*missing column\(s\) \['roi mask file path'\]"):
        load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass")


def test_skip_drops_whole_image_of_a_bad_row_with_one_warning(tmp_path: Path, caplog) -> None:
    # Prepare: image 1's second abnormality has no ROI folder, image 2 has an unknown pathology.
    images = [
        CbisImage(patient="P_00001", lesions=[CbisLesion(1), CbisLesion(2, rect=(20, 20, 30, 30))]),
        CbisImage(patient="P_00002", lesions=[CbisLesion(1, "UNKNOWN")]),
        CbisImage(patient="P_00003"),
    ]
    build_cbis(tmp_path, images, csvs=MASS_CSVS)
    shutil.rmtree(tmp_path / "CBIS-DDSM" / f"{images[0].subject}_2")

    with caplog.at_level(logging.WARNING):
        records = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass", on_bad_row="skip")

    assert [r.patient_id for r in records] == ["P_00003"]
    (warning,) = _warnings(caplog)
    assert "skipped 2 bad rows" in warning.getMessage() and "UNKNOWN" in warning.getMessage()


@pytest.mark.parametrize(("policy", "expected"), [("error", None), ("drop_train", {("P_00001", "test")})])
def test_patient_in_both_official_splits(tmp_path: Path, policy: str, expected: set | None) -> None:
    images = [CbisImage(patient="P_00001"), CbisImage(patient="P_00001", kind="Calc", split="Test", view="MLO")]
    build_cbis(tmp_path, images)

    if expected is None:
        with pytest.raises(DataError, match=r"P_00001 in \['test', 'train'\].*cross_split_patients='drop_train'"):
            load_cbis_ddsm(tmp_path, CLASSES, cross_split_patients=policy)
    else:
        records = load_cbis_ddsm(tmp_path, CLASSES, cross_split_patients=policy)
        assert {(r.patient_id, r.split) for r in records} == expected


@pytest.mark.parametrize(("resplit_train", "expected"), [(False, ["train", "test"]), (True, [None, "test"])])
def test_resplit_train_leaves_official_train_unassigned(tmp_path: Path, resplit_train: bool, expected: list) -> None:
    build_cbis(tmp_path, [CbisImage(), CbisImage(patient="P_00002", split="Test")], csvs=MASS_CSVS)

    records = load_cbis_ddsm(tmp_path, CLASSES, abnormality="mass", resplit_train=resplit_train)

    assert [r.split for r in records] == expected
