"""Split records into federated partitions (one per client), keeping every patient in one partition.

Schemes:

- ``"site"``: one partition per acquisition site (:attr:`Record.site`), sites in sorted order — the
  realistic setting when every hospital trains on its own data;
- ``"iid"``: patients shuffled and dealt out so that partition sizes are as equal as possible;
- ``"dirichlet"``: label skew (Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification"): for every label, the shares of its patients
  per partition are drawn from ``Dirichlet(alpha)``; records without a label form their own group.
  Small ``alpha`` gives partitions dominated by one label, large ``alpha`` approaches IID;
- ``"quantity"``: quantity skew: partition shares of all patients drawn from ``Dirichlet(alpha)``.

Patients are the unit of assignment (all records with the same ``patient_id`` go together), so the
sizes are in records but the draws are over patients. Random schemes redraw up to
:data:`MAX_DRAWS` times until every partition has ``min_size`` records, and raise
:class:`~mtmedformer.errors.DataError` saying why when that fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from mtmedformer import TASKS
from mtmedformer.config.loader import suggest
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError

SCHEMES: tuple[str, ...] = ("site", "iid", "dirichlet", "quantity")
MAX_DRAWS = 100  # redraws of a random scheme before giving up on non-empty partitions
UNLABELLED = "(unlabelled)"  # key of records without a class label in label groups and descriptions


def _group_patients(records: Sequence[Record]) -> list[list[Record]]:
    """Group records by patient, groups in order of first appearance, records in input order."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.patient_id, []).append(record)
    return list(groups.values())


def _patient_label(group: Sequence[Record]) -> str:
    """Return the most frequent label of a patient's records (ties: first by name), or UNLABELLED."""
    counts = Counter(r.label for r in group if r.label is not None)
    if not counts:
        return UNLABELLED
    top = max(counts.values())
    return min(label for label, n in counts.items() if n == top)


def _flatten(groups: Sequence[Sequence[Record]]) -> list[Record]:
    return [record for group in groups for record in group]


def _split_by_share(groups: Sequence[Sequence[Record]], shares: np.ndarray) -> list[list[int]]:
    """Assign groups, in order, to partitions so that record counts follow ``shares`` (cumulative cut)."""
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    midpoints = (np.cumsum(sizes) - sizes / 2.0) / max(sizes.sum(), 1.0)  # each group's centre in [0, 1]
    owners = np.searchsorted(np.cumsum(shares)[:-1], midpoints, side="right")
    buckets: list[list[int]] = [[] for _ in shares]
    for index, owner in enumerate(owners):
        buckets[int(owner)].append(index)
    return buckets


def _by_site(groups: list[list[Record]], num_partitions: int) -> list[list[list[Record]]]:
    missing = [g[0] for g in groups if any(r.site is None for r in g)]
    if missing:
        raise DataError(
            "the 'site' scheme needs a site for every record; give the site column or use another scheme",
            origin=missing[0].origin or f"patient {missing[0].patient_id}",
        )
    for group in groups:
        sites = sorted({r.site or "" for r in group})
        if len(sites) > 1:
            raise DataError(
                f"patient ID '{group[0].patient_id}' occurs at several sites {sites}, but a patient must stay in "
                "one partition; if these are different patients, make the IDs unique per site (e.g. prefix the "
                "site name)",
                origin=group[0].origin or None,
            )
    sites = sorted({g[0].site or "" for g in groups})
    if len(sites) != num_partitions:
        raise DataError(
            f"the 'site' scheme makes one partition per site, but the records have {len(sites)} sites "
            f"({', '.join(sites)}) and {num_partitions} partitions were asked for; set the number of "
            f"partitions (clients) to {len(sites)} or use another scheme"
        )
    return [[g for g in groups if g[0].site == site] for site in sites]


def _iid(groups: list[list[Record]], num_partitions: int, rng: np.random.Generator) -> list[list[list[Record]]]:
    parts: list[list[list[Record]]] = [[] for _ in range(num_partitions)]
    counts = np.zeros(num_partitions, dtype=np.int64)
    order = rng.permutation(len(groups))
    # Largest patients first (stable within equal sizes) so the greedy dealing balances record counts.
    for index in sorted(order, key=lambda i: -len(groups[i])):
        target = int(np.argmin(counts))
        parts[target].append(groups[index])
        counts[target] += len(groups[index])
    return parts


def _dirichlet(
    groups: list[list[Record]], num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[list[list[Record]]]:
    by_label: dict[str, list[list[Record]]] = {}
    for group in groups:
        by_label.setdefault(_patient_label(group), []).append(group)
    parts: list[list[list[Record]]] = [[] for _ in range(num_partitions)]
    for label in sorted(by_label):
        members = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        for owner, indices in enumerate(_split_by_share(members, shares)):
            parts[owner].extend(members[i] for i in indices)
    return parts


def _quantity(
    groups: list[list[Record]], num_partitions: int, alpha: float, rng: np.random.Generator
) -> list[list[list[Record]]]:
    members = [groups[i] for i in rng.permutation(len(groups))]
    shares = rng.dirichlet(np.full(num_partitions, alpha))
    return [[members[i] for i in indices] for indices in _split_by_share(members, shares)]


def partition_records(
    records: Sequence[Record],
    num_partitions: int,
    scheme: str,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 1,
) -> list[list[Record]]:
    """Split ``records`` into ``num_partitions`` disjoint partitions, one per federated client.

    Parameters
    ----------
    records
        The records to split (typically the training split of one data set).
    num_partitions
        Number of partitions (clients), ``>= 1``.
    scheme
        ``"site"``, ``"iid"``, ``"dirichlet"`` or ``"quantity"`` (see the module docstring).
    alpha
        Dirichlet concentration for ``"dirichlet"`` and ``"quantity"``, ``> 0``; default ``0.5``.
        Smaller is more skewed.
    seed
        Seed of the random schemes; the same inputs and seed give the same partitions.
    min_size
        Minimum number of records per partition, ``>= 1``; default ``1``.

    Returns
    -------
    list of list of Record
        ``num_partitions`` lists that together hold every record exactly once; a patient's records
        are in one partition. Within a partition, records of a patient stay in input order.

    Raises
    ------
    ValueError
        If ``num_partitions``, ``scheme``, ``alpha`` or ``min_size`` is invalid.
    DataError
        If the request cannot be met: fewer patients than partitions, fewer records than
        ``num_partitions * min_size``, sites not matching ``num_partitions`` (``"site"``), a patient
        at several sites, or no draw with ``min_size`` records everywhere after :data:`MAX_DRAWS`
        tries (raise ``alpha`` or use fewer partitions).
    """
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int | np.integer) or num_partitions < 1:
        raise ValueError(f"num_partitions must be an integer >= 1, got {num_partitions!r}")
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown partition scheme '{scheme}'.{suggest(scheme, SCHEMES)} Valid schemes: {list(SCHEMES)}"
        )
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    groups = _group_patients(records)
    if scheme != "site" and len(groups) < num_partitions:  # "site" explains a mismatch in terms of sites
        raise DataError(
            f"cannot make {num_partitions} non-empty partitions from {len(groups)} patients ({len(records)} records): "
            "a patient's records never split; use fewer partitions or more data"
        )
    if len(records) < num_partitions * min_size:
        raise DataError(
            f"cannot give each of {num_partitions} partitions at least {min_size} records from {len(records)} records; "
            "lower min_size or the number of partitions"
        )
    if scheme in ("site", "iid"):
        if scheme == "site":
            parts = [_flatten(p) for p in _by_site(groups, num_partitions)]
            names = [str(p[0].site) for p in parts]
        else:
            parts = [_flatten(p) for p in _iid(groups, num_partitions, np.random.default_rng(seed))]
            names = [f"partition {i}" for i in range(num_partitions)]
        small = [f"{name} ({len(p)} records)" for name, p in zip(names, parts, strict=True) if len(p) < min_size]
        if small:
            raise DataError(
                f"the '{scheme}' scheme leaves {', '.join(small)} below min_size={min_size} (patients are never "
                "split); lower min_size or use fewer partitions"
            )
        return parts

    rng = np.random.default_rng(seed)
    draw = _dirichlet if scheme == "dirichlet" else _quantity
    smallest = 0
    for _ in range(MAX_DRAWS):
        parts = [_flatten(p) for p in draw(groups, num_partitions, alpha, rng)]
        smallest = min(len(p) for p in parts)
        if smallest >= min_size:
            return parts
    raise DataError(
        f"no '{scheme}' partition with alpha={alpha} gave all {num_partitions} partitions at least {min_size} records "
        f"in {MAX_DRAWS} draws (smallest in the last draw: {smallest}); alpha is too small for this many partitions "
        f"and {len(groups)} patients: raise alpha, use fewer partitions, or lower min_size"
    )


def describe_partitions(parts: Sequence[Sequence[Record]]) -> list[dict[str, object]]:
    """Count records, patients, labels, annotated tasks and sites per partition, for logging.

    Parameters
    ----------
    parts
        Partitions as returned by :func:`partition_records`.

    Returns
    -------
    list of dict
        One dict per partition: ``"records"`` (int), ``"patients"`` (int), ``"labels"`` (label ->
        count, unlabelled records under ``"(unlabelled)"``), ``"tasks"`` (task name -> number of
        records annotated for it) and ``"sites"`` (site -> count, unknown under ``"(unknown)"``).
    """
    summary: list[dict[str, object]] = []
    for part in parts:
        annotated = {
            "classification": sum(r.has_label for r in part),
            "segmentation": sum(r.has_mask for r in part),
            "detection": sum(r.has_boxes for r in part),
        }
        summary.append(
            {
                "records": len(part),
                "patients": len({r.patient_id for r in part}),
                "labels": dict(sorted(Counter(r.label or UNLABELLED for r in part).items())),
                "tasks": {task: annotated[task] for task in TASKS},
                "sites": dict(sorted(Counter(r.site or "(unknown)" for r in part).items())),
            }
        )
    return summary
