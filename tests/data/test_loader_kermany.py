import logging
import re
from pathlib import Path

import pytest

from mtmedformer.data.loaders import load_kermany
from mtmedformer.errors import ConfigError, DataError
from tests.data.fixtures_native import build_kermany

CLASSES = ("normal", "pneumonia")
FILES = [
    "train/NORMAL/IM-0115-0001.jpeg",
    "train/NORMAL/NORMAL2-IM-1427-0001.jpeg",
    "train/PNEUMONIA/person1_bacteria_1.jpeg",
    "train/PNEUMONIA/person1_virus_6.jpeg",
    "val/NORMAL/NORMAL2-IM-1430-0001.jpeg",
    "val/PNEUMONIA/person1946_bacteria_4874.jpeg",
    "test/NORMAL/IM-0001-0001.jpeg",
    "test/PNEUMONIA/person100_bacteria_475.jpeg",
]


def _by_name(records) -> dict:
    return {r.image.name: r for r in records}


@pytest.mark.parametrize(
    ("keep_official_val", "splits"),
    [(False, {"train": None, "val": None, "test": "test"}), (True, {"train": "train", "val": "val", "test": "test"})],
)
def test_happy_path_labels_patients_splits(tmp_path: Path, keep_official_val: bool, splits: dict) -> None:
    # Prepare
    build_kermany(tmp_path, FILES)

    # Execute
    records = load_kermany(tmp_path, CLASSES, keep_official_val=keep_official_val)

    # Assert
    assert len(records) == len(FILES)
    expected_patients = {
        "IM-0115-0001.jpeg": "train/IM-0115",
        "NORMAL2-IM-1427-0001.jpeg": "train/NORMAL2-IM-1427",
        "NORMAL2-IM-1430-0001.jpeg": "train/NORMAL2-IM-1430",  # Kaggle val shares the train numbering
        "person1_bacteria_1.jpeg": "train/person1",
        "person1_virus_6.jpeg": "train/person1",
        "person100_bacteria_475.jpeg": "test/person100",
    }
    by_name = _by_name(records)
    for name, patient in expected_patients.items():
        assert by_name[name].patient_id == patient
    for record in records:
        official = record.extra["official_split"]
        assert record.split == splits[official]
        assert record.label == ("pneumonia" if record.image.parent.name == "PNEUMONIA" else "normal")
        assert record.masks is None and record.boxes is None and not record.has_boxes
    assert by_name["person1_virus_6.jpeg"].extra == {"subtype": "virus", "official_split": "train"}
    assert by_name["IM-0115-0001.jpeg"].extra == {"official_split": "train"}
    assert by_name["IM-0115-0001.jpeg"].origin == "train/NORMAL/IM-0115-0001.jpeg"


@pytest.mark.parametrize("point_at_chest_xray", [True, False])
def test_root_may_be_chest_xray_itself_and_val_is_optional(tmp_path: Path, point_at_chest_xray: bool) -> None:
    base = build_kermany(tmp_path, [f for f in FILES if not f.startswith("val/")])
    (base / "__MACOSX").mkdir()
    (base / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")

    records = load_kermany(base if point_at_chest_xray else tmp_path, CLASSES)

    assert len(records) == 6


@pytest.mark.parametrize(
    ("bad_file", "match"),
    [
        ("train/NORMAL/scan_17.jpeg", "NORMAL images are named like 'IM-0115-0001.jpeg'"),
        ("train/PNEUMONIA/IM-0001-0001.jpeg", "PNEUMONIA images are named like 'person1_bacteria_1.jpeg'"),
        ("train/PNEUMONIA/person2_fungus_1.jpeg", "cannot read the patient id from the file name"),
        ("test/NORMAL/IM-0003-0001.png", "not a JPEG image; remove it from NORMAL/"),
    ],
)
def test_bad_file_names_error_and_skip(tmp_path: Path, caplog, bad_file: str, match: str) -> None:
    build_kermany(tmp_path, [*FILES, bad_file])

    with pytest.raises(DataError, match=rf"file .*{Path(bad_file).name}: .*{match}"):
        load_kermany(tmp_path, CLASSES)
    with caplog.at_level(logging.WARNING):
        records = load_kermany(tmp_path, CLASSES, on_bad_row="skip")

    assert len(records) == len(FILES)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 1 bad files" in warning.getMessage()


def test_patient_in_two_official_val_and_train_folders(tmp_path: Path) -> None:
    # val/ was carved out of train/: the same number there is the same child, split apart by keep_official_val.
    build_kermany(tmp_path, [*FILES, "val/NORMAL/IM-0115-0002.jpeg"])
    conflict = "train/IM-0115 in ['train', 'val']"

    with pytest.raises(DataError, match=r"1 patient\(s\) appear in several official splits \(" + re.escape(conflict)):
        load_kermany(tmp_path, CLASSES, keep_official_val=True)
    records = load_kermany(tmp_path, CLASSES, keep_official_val=True, cross_split_patients="drop_train")

    kept = [r for r in records if r.patient_id == "train/IM-0115"]
    assert [r.image.name for r in kept] == ["IM-0115-0002.jpeg"]


# Every file-name pattern of the published set (Mendeley ChestXRay2017 / its Kaggle copy), incl. the same
# person number in train/ and test/ (a different child in each cohort).
PUBLISHED = [
    "train/NORMAL/IM-0115-0001.jpeg",
    "train/NORMAL/IM-0429-0001-0001.jpeg",
    "train/NORMAL/IM-0429-0001-0002.jpeg",
    "train/NORMAL/NORMAL2-IM-1427-0001.jpeg",
    "train/NORMAL/NORMAL2-IM-0173-0001-0002.jpeg",
    "train/PNEUMONIA/person1_bacteria_1.jpeg",
    "train/PNEUMONIA/person1_virus_6.jpeg",
    "train/PNEUMONIA/person447_virus_921_1.jpeg",
    "test/NORMAL/IM-0011-0001-0001.jpeg",
    "test/NORMAL/NORMAL2-IM-0246-0001-0002.jpeg",
    "test/PNEUMONIA/person1_virus_9.jpeg",
    "test/PNEUMONIA/person100_bacteria_475.jpeg",
]


def test_published_layout_and_names_load_with_defaults(tmp_path: Path, caplog) -> None:
    # Prepare: train/ and test/ only, no val/, every real name pattern, a person number in both cohorts.
    build_kermany(tmp_path, PUBLISHED)

    # Execute: the default options.
    with caplog.at_level(logging.INFO, logger="mtmedformer.data.loaders.kermany"):
        records = load_kermany(tmp_path, CLASSES)

    # Assert
    by_name = _by_name(records)
    assert len(records) == len(PUBLISHED)
    assert by_name["IM-0429-0001-0002.jpeg"].patient_id == "train/IM-0429"
    assert by_name["IM-0429-0001-0001.jpeg"].patient_id == "train/IM-0429"
    assert by_name["NORMAL2-IM-0173-0001-0002.jpeg"].patient_id == "train/NORMAL2-IM-0173"
    assert by_name["person447_virus_921_1.jpeg"].patient_id == "train/person447"
    assert by_name["person447_virus_921_1.jpeg"].extra["subtype"] == "virus"
    assert by_name["person1_virus_6.jpeg"].patient_id == "train/person1"
    assert by_name["person1_virus_9.jpeg"].patient_id == "test/person1"
    assert {r.split for r in records if r.extra["official_split"] == "test"} == {"test"}
    assert {r.split for r in records if r.extra["official_split"] == "train"} == {None}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("no val/ folder" in r.getMessage() for r in caplog.records)


def test_wrong_root_lists_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()

    with pytest.raises(DataError, match=r"not a Kermany chest_xray root: .*found train/"):
        load_kermany(tmp_path, CLASSES)


def test_missing_class_folder(tmp_path: Path) -> None:
    build_kermany(tmp_path, [f for f in FILES if "test/PNEUMONIA" not in f])

    with pytest.raises(DataError, match=r"test/ lacks the class folder\(s\) \['PNEUMONIA'\]"):
        load_kermany(tmp_path, CLASSES)


@pytest.mark.parametrize(
    ("classes", "kwargs", "match"),
    [
        (("normal", "sick"), {}, r"need the class names \['pneumonia'\]"),
        (CLASSES, {"cross_split_patients": "drop-train"}, "Did you mean 'drop_train'"),
        (CLASSES, {"on_bad_row": "skipp"}, "Did you mean 'skip'"),
    ],
)
def test_bad_options(tmp_path: Path, classes: tuple, kwargs: dict, match: str) -> None:
    build_kermany(tmp_path, FILES)

    with pytest.raises(ConfigError, match=match):
        load_kermany(tmp_path, classes, **kwargs)
