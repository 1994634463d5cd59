"""Tests of the federated partitioners: disjoint, complete, non-empty, deterministic, patient-preserving, skewed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mtmedformer.data.partition import UNLABELLED, describe_partitions, partition_records
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError

RANDOM_SCHEMES = ("iid", "dirichlet", "quantity")


def make_records(
    num_patients: int,
    *,
    labels: tuple[str | None, ...] = ("benign", "malignant", None),
    sites: tuple[str, ...] = ("site-a", "site-b", "site-c"),
    seed: int = 0,
) -> list[Record]:
    """Patients with one to three images each; a patient's images share label and site."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(num_patients):
        label = labels[p % len(labels)]
        site = sites[p % len(sites)]
        for k in range(int(rng.integers(1, 4))):
            records.append(Record(image=Path(f"img/{p}-{k}.png"), patient_id=f"p{p}", label=label, site=site))
    return records


def ids(parts: list[list[Record]]) -> list[list[Path]]:
    return [[r.image for r in part] for part in parts]


@pytest.mark.parametrize("scheme", ["site", *RANDOM_SCHEMES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partitions_are_disjoint_complete_non_empty_and_keep_patients(scheme: str, seed: int) -> None:
    # Prepare
    records = make_records(60, seed=seed)

    # Execute
    parts = partition_records(records, 3, scheme, alpha=0.5, seed=seed)

    # Assert
    assert len(parts) == 3
    assert all(parts)
    flat = [r.image for part in parts for r in part]
    assert sorted(flat) == sorted(r.image for r in records)
    owner: dict[str, set[int]] = {}
    for index, part in enumerate(parts):
        for record in part:
            owner.setdefault(record.patient_id, set()).add(index)
    assert all(len(found) == 1 for found in owner.values())


@pytest.mark.parametrize("scheme", RANDOM_SCHEMES)
def test_partitions_are_deterministic_by_seed(scheme: str) -> None:
    # Prepare
    records = make_records(80)

    # Execute
    first = partition_records(records, 4, scheme, seed=3)
    again = partition_records(records, 4, scheme, seed=3)
    other = partition_records(records, 4, scheme, seed=4)

    # Assert
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)


def test_site_scheme_groups_by_site_in_sorted_order() -> None:
    # Prepare
    records = make_records(12, sites=("site-b", "site-a"))

    # Execute
    parts = partition_records(records, 2, "site")

    # Assert
    assert [{r.site for r in part} for part in parts] == [{"site-a"}, {"site-b"}]


def test_iid_balances_record_counts() -> None:
    # Prepare
    records = make_records(200)

    # Execute
    sizes = [len(p) for p in partition_records(records, 5, "iid")]

    # Assert: patients have at most 3 images, so greedy dealing is within 3 records of equal.
    assert max(sizes) - min(sizes) <= 3


def label_skew(parts: list[list[Record]]) -> float:
    """Mean over partitions of the share of the partition's most frequent label (1 = one label only)."""
    return float(np.mean([max(Counter(r.label for r in p).values()) / len(p) for p in parts]))


def size_skew(parts: list[list[Record]]) -> float:
    sizes = np.array([len(p) for p in parts], dtype=float)
    return float(sizes.std() / sizes.mean())


@pytest.mark.parametrize(("scheme", "skew"), [("dirichlet", label_skew), ("quantity", size_skew)])
def test_small_alpha_is_more_skewed_than_large_alpha(scheme: str, skew: object) -> None:
    # Prepare
    records = make_records(400, labels=("benign", "malignant"))

    # Execute
    small = [skew(partition_records(records, 4, scheme, alpha=0.1, seed=s)) for s in range(5)]  # type: ignore[operator]
    large = [skew(partition_records(records, 4, scheme, alpha=100.0, seed=s)) for s in range(5)]  # type: ignore[operator]

    # Assert
    assert np.mean(small) > np.mean(large) + 0.15


def test_dirichlet_keeps_unlabelled_records_as_their_own_group() -> None:
    # Prepare: only unlabelled records; the scheme must still split them, not drop or crash on them.
    records = make_records(30, labels=(None,))

    # Execute
    parts = partition_records(records, 3, "dirichlet", alpha=5.0)

    # Assert
    assert sum(len(p) for p in parts) == len(records)
    assert all(parts)


def test_site_scheme_with_wrong_number_of_partitions_lists_the_sites() -> None:
    # Prepare
    records = make_records(12)

    # Execute / Assert
    with pytest.raises(DataError, match=r"3 sites \(site-a, site-b, site-c\) and 2 partitions"):
        partition_records(records, 2, "site")


def test_site_scheme_needs_sites() -> None:
    # Prepare
    records = [Record(image=Path("a.png"), patient_id="p1", origin="manifest.csv row 2")]

    # Execute / Assert
    with pytest.raises(DataError, match=re.escape("manifest.csv row 2: the 'site' scheme needs a site")):
        partition_records(records, 1, "site")


def test_site_scheme_rejects_a_patient_at_two_sites() -> None:
    # Prepare
    records = [
        Record(image=Path("a.png"), patient_id="p1", site="site-a"),
        Record(image=Path("b.png"), patient_id="p1", site="site-b"),
    ]

    # Execute / Assert
    with pytest.raises(DataError, match="patient ID 'p1' occurs at several sites"):
        partition_records(records, 2, "site")


@pytest.mark.parametrize(
    ("num_patients", "num_partitions", "kwargs", "message"),
    [
        (3, 4, {"scheme": "iid"}, "from 3 patients"),
        (6, 3, {"scheme": "iid", "min_size": 50}, "at least 50 records"),
        (40, 10, {"scheme": "dirichlet", "alpha": 0.001}, "raise alpha"),
        (40, 10, {"scheme": "quantity", "alpha": 0.001}, "raise alpha"),
    ],
)
def test_impossible_requests_raise_with_the_reason(
    num_patients: int, num_partitions: int, kwargs: dict[str, object], message: str
) -> None:
    # Prepare
    records = make_records(num_patients)

    # Execute / Assert
    with pytest.raises(DataError, match=message):
        partition_records(records, num_partitions, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 0, "scheme": "iid"}, "num_partitions"),
        ({"num_partitions": 2, "scheme": "dirichlet_label"}, "Did you mean 'dirichlet'"),
        ({"num_partitions": 2, "scheme": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
        ({"num_partitions": 2, "scheme": "iid", "min_size": 0}, "min_size"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        partition_records(make_records(10), **kwargs)  # type: ignore[arg-type]


def test_describe_partitions_counts_labels_tasks_and_sites() -> None:
    # Prepare
    part = [
        Record(image=Path("a.png"), patient_id="p1", label="benign", masks=(Path("m.png"),), boxes_from_mask=True),
        Record(image=Path("b.png"), patient_id="p1", label=None, boxes=(), site="site-a"),
        Record(image=Path("c.png"), patient_id="p2", label="malignant", site="site-a"),
    ]

    # Execute
    summary = describe_partitions([part, []])

    # Assert
    assert summary[0] == {
        "records": 3,
        "patients": 2,
        "labels": {UNLABELLED: 1, "benign": 1, "malignant": 1},
        "tasks": {"classification": 2, "segmentation": 1, "detection": 2},
        "sites": {"(unknown)": 1, "site-a": 2},
    }
    assert summary[1]["records"] == 0
