"""Patient-level train/val/test splits.

A patient's images must all sit in one split, otherwise a model is evaluated on the patient it was
trained on and the test numbers are inflated. Patients are identified by ``(site, patient_id)``, so two
hospitals that both number their patients from 1 are not merged into one patient.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from mtmedformer.data.records import SPLITS, Record
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

PatientKey = tuple[str | None, str]


def _patient(record: Record) -> PatientKey:
    return (record.site, record.patient_id)


def _describe(key: PatientKey) -> str:
    site, patient_id = key
    return f"patient '{patient_id}'" + (f" of site '{site}'" if site is not None else "")


def check_patient_splits(records: Sequence[Record]) -> None:
    """Check that no patient has records in two different splits (records without a split are ignored).

    Raises
    ------
    DataError
        Naming the patient, both splits and a record of each, if a patient spans two splits.
    """
    seen: dict[PatientKey, Record] = {}
    for record in records:
        if record.split is None:
            continue
        first = seen.setdefault(_patient(record), record)
        if first.split != record.split:
            raise DataError(
                f"{_describe(_patient(record))} is in split '{first.split}' ({first.origin or first.image}) and in "
                f"split '{record.split}' ({record.origin or record.image}); all images of a patient must be in one "
                "split so that evaluation never sees a training patient. Give the patient's rows the same split, "
                "or leave the split empty to have it assigned",
                origin=record.origin or None,
                path=record.image,
            )


def _stratum(records: list[Record]) -> str:
    # A patient's most frequent label (ties broken by name) so that class balance carries into every split.
    labels = Counter(r.label for r in records if r.label is not None)
    if not labels:
        return ""
    return min(labels, key=lambda name: (-labels[name], name))


def _stratified_order(patients: list[PatientKey], strata: dict[PatientKey, str], seed: int) -> list[PatientKey]:
    """Order patients so that every prefix holds each stratum in proportion to its size.

    Each stratum's patients are shuffled and spread evenly over ``[0, 1)`` with a random offset; sorting all
    patients by that position interleaves the strata. Taking the first ``n`` patients is then a stratified
    sample of size ``n`` with exact overall counts, even for strata of one or two patients.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[PatientKey]] = defaultdict(list)
    for key in sorted(patients, key=lambda k: (str(k[0]), k[1])):  # sorted first: independent of input order
        groups[strata[key]].append(key)
    positioned: list[tuple[float, float, PatientKey]] = []
    for name in sorted(groups):
        members = groups[name]
        order = rng.permutation(len(members))
        offset = rng.random()
        for rank, index in enumerate(order):
            positioned.append(((rank + offset) / len(members), rng.random(), members[index]))
    positioned.sort(key=lambda item: (item[0], item[1]))
    return [key for _, _, key in positioned]


def assign_splits(records: Sequence[Record], val_fraction: float, test_fraction: float, seed: int) -> list[Record]:
    """Give every record a split, keeping the splits the source already gave.

    Patients with a given split keep it (their records without one join it). The other patients are
    split at patient level, stratified by each patient's most frequent label: the first
    ``round(n * test_fraction)`` patients of a seeded stratified order go to test, the next
    ``round(n * val_fraction)`` to val, the rest to train, where ``n`` counts only these patients.

    Parameters
    ----------
    records
        Records, some or all with ``split=None``.
    val_fraction, test_fraction
        Fractions of the unassigned patients for val and test, each in ``[0, 1)``, summing to less than 1.
    seed
        Seed of the split: the same records and seed always give the same split, whatever their order.

    Returns
    -------
    list of Record
        The records in their input order, each with ``split`` set.

    Raises
    ------
    ValueError
        If the fractions are out of range.
    DataError
        If a patient already spans two splits, or so few patients are unassigned that the fractions leave
        none for training.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave a training split, got {val_fraction} + {test_fraction}"
        )
    check_patient_splits(records)

    by_patient: dict[PatientKey, list[Record]] = defaultdict(list)
    for record in records:
        by_patient[_patient(record)].append(record)
    chosen: dict[PatientKey, str] = {}
    for key, group in by_patient.items():
        given = next((r.split for r in group if r.split is not None), None)
        if given is not None:
            chosen[key] = given

    free = [key for key in by_patient if key not in chosen]
    if free:
        n = len(free)
        n_test = math.floor(n * test_fraction + 0.5)  # round half up, not to even: 0.5 patient -> 1
        n_val = math.floor(n * val_fraction + 0.5)
        if n_test + n_val >= n:
            raise DataError(
                f"only {n} patient(s) have no split; val_fraction={val_fraction} and test_fraction={test_fraction} "
                f"give {n_val} val and {n_test} test patient(s), leaving none for training. Lower the fractions, "
                "add data, or set the split column yourself"
            )
        for split, fraction, count in (("val", val_fraction, n_val), ("test", test_fraction, n_test)):
            if fraction > 0 and count == 0:
                logger.warning(
                    "%s split is empty: %d unassigned patient(s) x %s_fraction %.3g rounds to 0 patients",
                    split,
                    n,
                    split,
                    fraction,
                )
        strata = {key: _stratum(by_patient[key]) for key in free}
        order = _stratified_order(free, strata, seed)
        for i, key in enumerate(order):
            chosen[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return [dataclasses.replace(r, split=chosen[_patient(r)]) for r in records]


def by_split(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Group records by split.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``; every split is present, possibly empty.

    Raises
    ------
    DataError
        If a record has no split (call :func:`assign_splits` first) or an unknown one.
    """
    groups: dict[str, list[Record]] = {split: [] for split in SPLITS}
    for record in records:
        if record.split not in groups:
            raise DataError(
                f"record has split {record.split!r}; expected one of {list(SPLITS)} (call assign_splits first to "
                "fill missing splits)",
                origin=record.origin or None,
                path=record.image,
            )
        groups[record.split].append(record)
    return groups
