import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from mtmedformer.data.records import SPLITS, Record
from mtmedformer.data.splits import assign_splits, by_split, check_patient_splits
from mtmedformer.errors import DataError


def _records(n_patients, images_per_patient=(1, 2, 3), malignant_every=5, site=None):
    """Patients p0..p{n-1} with 1-3 images each; every `malignant_every`-th patient is malignant."""
    records = []
    for p in range(n_patients):
        label = "malignant" if p % malignant_every == 0 else "benign"
        for i in range(images_per_patient[p % len(images_per_patient)]):
            records.append(
                Record(
                    image=Path(f"p{p}_{i}.png"),
                    patient_id=f"p{p}",
                    label=label,
                    site=site,
                    origin=f"m.csv row {len(records) + 2}",
                )
            )
    return records


def _split_of_patient(records):
    return {r.patient_id: r.split for r in records}


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_assign_splits_keeps_each_patient_in_one_split(seed):
    # Prepare
    records = _records(60)

    # Execute
    assigned = assign_splits(records, 0.2, 0.1, seed)

    # Assert
    per_patient = {}
    for r in assigned:
        per_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(splits) == 1 for splits in per_patient.values())
    assert [r.image for r in assigned] == [r.image for r in records]  # input order kept
    check_patient_splits(assigned)


@pytest.mark.parametrize(("n", "val", "test"), [(100, 0.2, 0.1), (40, 0.15, 0.15), (7, 0.3, 0.0)])
def test_assign_splits_respects_fractions_in_patients(n, val, test):
    # Execute
    patients = Counter(_split_of_patient(assign_splits(_records(n), val, test, seed=0)).values())

    # Assert: counts are fraction * patients, rounded half up
    assert patients["val"] == int(n * val + 0.5)
    assert patients["test"] == int(n * test + 0.5)
    assert patients["train"] == n - patients["val"] - patients["test"]


def test_assign_splits_stratifies_by_label():
    # Prepare: 100 patients, 20 malignant
    records = _records(100, images_per_patient=(1,), malignant_every=5)

    # Execute
    assigned = assign_splits(records, 0.2, 0.2, seed=3)

    # Assert: each 20-patient split holds 4 malignant patients, give or take one
    for split in ("val", "test"):
        malignant = sum(r.label == "malignant" for r in assigned if r.split == split)
        assert abs(malignant - 4) <= 1, (split, malignant)


def test_assign_splits_is_deterministic_and_independent_of_order():
    # Prepare
    records = _records(50)
    shuffled = list(records)
    random.Random(1).shuffle(shuffled)

    # Execute
    first = _split_of_patient(assign_splits(records, 0.2, 0.2, seed=5))
    again = _split_of_patient(assign_splits(records, 0.2, 0.2, seed=5))
    reordered = _split_of_patient(assign_splits(shuffled, 0.2, 0.2, seed=5))
    other_seed = _split_of_patient(assign_splits(records, 0.2, 0.2, seed=6))

    # Assert
    assert first == again == reordered
    assert first != other_seed


def test_assign_splits_keeps_given_splits_and_extends_them_to_the_patient():
    # Prepare: q0 has one image marked test and one unmarked; q1 is marked val
    records = [
        Record(image=Path("a.png"), patient_id="q0", split="test"),
        Record(image=Path("b.png"), patient_id="q0"),
        Record(image=Path("c.png"), patient_id="q1", split="val"),
        *_records(10),
    ]

    # Execute
    assigned = assign_splits(records, 0.0, 0.0, seed=0)

    # Assert
    assert [r.split for r in assigned[:3]] == ["test", "test", "val"]
    assert {r.split for r in assigned[3:]} == {"train"}


def test_same_patient_id_at_two_sites_is_two_patients():
    # Prepare
    records = [
        Record(image=Path("a.png"), patient_id="1", site="A", split="train"),
        Record(image=Path("b.png"), patient_id="1", site="B", split="test"),
    ]

    # Execute / Assert: no error, splits unchanged
    assert [r.split for r in assign_splits(records, 0.1, 0.1, seed=0)] == ["train", "test"]


def test_check_patient_splits_names_patient_and_both_splits():
    # Prepare
    records = [
        Record(image=Path("a.png"), patient_id="P7", split="train", origin="m.csv row 2"),
        Record(image=Path("b.png"), patient_id="P7", split="test", origin="m.csv row 5"),
    ]

    # Execute
    with pytest.raises(DataError) as info:
        check_patient_splits(records)

    # Assert
    message = str(info.value)
    for part in ("'P7'", "'train'", "'test'", "row 2", "row 5", "b.png", "same split"):
        assert part in message


def test_tiny_set_whose_fractions_leave_no_training_patient_is_an_error():
    with pytest.raises(DataError, match=r"only 2 patient.*leaving none for training"):
        assign_splits(_records(2), 0.25, 0.25, seed=0)


def test_tiny_set_warns_when_a_split_rounds_to_empty(caplog):
    # Execute
    with caplog.at_level(logging.WARNING):
        assigned = assign_splits(_records(3), 0.15, 0.15, seed=0)

    # Assert
    assert {r.split for r in assigned} == {"train"}
    assert "val split is empty" in caplog.text and "test split is empty" in caplog.text


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.5, 0.5)])
def test_assign_splits_rejects_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fraction"):
        assign_splits(_records(10), val, test, seed=0)


def test_by_split_groups_records_and_lists_every_split():
    # Prepare
    records = [
        Record(image=Path("a.png"), patient_id="a", split="train"),
        Record(image=Path("b.png"), patient_id="b", split="train"),
    ]

    # Execute
    groups = by_split(records)

    # Assert
    assert set(groups) == set(SPLITS)
    assert groups["train"] == records and groups["val"] == [] and groups["test"] == []


def test_by_split_rejects_unassigned_records():
    with pytest.raises(DataError, match="assign_splits"):
        by_split([Record(image=Path("a.png"), patient_id="a", origin="m.csv row 2")])
