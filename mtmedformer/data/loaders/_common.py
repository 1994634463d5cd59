"""Helpers shared by the native data-set loaders: bad-row policy, class mapping, CSV and DICOM headers.

Private to :mod:`mtmedformer.data.loaders`; the public entry points are the ``load_*`` functions.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from mtmedformer.config.loader import suggest
from mtmedformer.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

ON_BAD_ROW: tuple[str, ...] = ("error", "skip")
CROSS_SPLIT: tuple[str, ...] = ("error", "drop_train")
_HELD_OUT_RANK = {None: 0, "train": 0, "val": 1, "test": 2}  # higher = more held out
_MAX_REASONS = 3  # reasons quoted in the skip warning


def check_choice(name: str, value: str, options: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming ``name`` when ``value`` is not one of ``options``."""
    if value not in options:
        raise ConfigError(f"{name} must be one of {list(options)}, got '{value}'.{suggest(str(value), options)}")


class BadRows:
    """Apply the ``on_bad_row`` policy: raise the first problem, or collect them for one warning.

    Parameters
    ----------
    on_bad_row
        ``"error"`` raises the first :class:`DataError` reported; ``"skip"`` keeps a count and the
        reasons, and :meth:`warn` logs them once.
    source
        Data-set name used in the warning, e.g. ``"RSNA"``.
    unit
        What is skipped, for the messages, e.g. ``"rows"`` or ``"files"``.

    Raises
    ------
    ConfigError
        If ``on_bad_row`` is not ``"error"`` or ``"skip"``.
    """

    def __init__(self, on_bad_row: str, source: str, unit: str = "rows") -> None:
        check_choice("on_bad_row", on_bad_row, ON_BAD_ROW)
        self.skip = on_bad_row == "skip"
        self.source = source
        self.unit = unit
        self.errors: list[DataError] = []

    def report(self, error: DataError) -> None:
        """Raise ``error`` (with a hint about ``on_bad_row``) in ``"error"`` mode, otherwise remember it."""
        if not self.skip:
            hint = f" (or set on_bad_row: skip to drop bad {self.unit} with one warning)"
            raise DataError(error.reason + hint, origin=error.origin, path=error.path) from None
        self.errors.append(error)

    def warn(self) -> None:
        """Log one warning with the number of skipped items and the first few reasons (no-op if none)."""
        if not self.errors:
            return
        reasons = "; ".join(str(e) for e in self.errors[:_MAX_REASONS])
        more = f" (and {len(self.errors) - _MAX_REASONS} more)" if len(self.errors) > _MAX_REASONS else ""
        logger.warning(
            "%s: skipped %d bad %s (on_bad_row='skip'); first reasons: %s%s",
            self.source,
            len(self.errors),
            self.unit,
            reasons,
            more,
        )


def label_mapping(
    classes: Sequence[str], label_map: Mapping[str, str] | None, default: Mapping[str, str], source: str
) -> dict[str, str]:
    """Return the source-value -> class-name mapping, checked against ``classes``.

    Parameters
    ----------
    classes
        The configured class names (``data.classes``).
    label_map
        User mapping overriding ``default``; it must have exactly ``default``'s keys.
    default
        The loader's documented mapping, e.g. ``{"MALIGNANT": "malignant", ...}``.
    source
        Data-set name for messages.

    Raises
    ------
    ConfigError
        If ``label_map`` has other keys than ``default`` or a mapped name is not in ``classes``.
    """
    mapping = dict(default if label_map is None else label_map)
    if set(mapping) != set(default):
        raise ConfigError(
            f"{source} label_map must map exactly the values {sorted(default)}, got keys {sorted(mapping)}"
        )
    missing = sorted({name for name in mapping.values() if name not in classes})
    if missing:
        raise ConfigError(
            f"{source} labels need the class names {missing} but classes is {list(classes)}; add them to "
            f"data.classes (the {source} mapping is {mapping}) or pass a label_map onto your class names"
        )
    return mapping


def list_dir(folder: Path, limit: int = 10) -> str:
    """Describe up to ``limit`` entries of ``folder`` for a wrong-root message."""
    if not folder.is_dir():
        return "the folder does not exist" if not folder.exists() else "it is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    shown = ", ".join(names[:limit])
    return f"found {shown}" + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _normalise_header(name: str) -> str:
    # CBIS-DDSM spells the same column 'breast_density' (mass) and 'breast density' (calc).
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def read_csv(path: Path, required: Sequence[str], *, normalise: bool = False) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row_number, row)`` for each data row of a CSV, cells stripped of whitespace.

    Parameters
    ----------
    path
        The CSV file (UTF-8, an optional BOM is ignored).
    required
        Column names that must be present (compared after normalisation when ``normalise``).
    normalise
        Lower-case the header and fold runs of spaces/underscores into one space.

    Yields
    ------
    tuple[int, dict[str, str]]
        The file row number (the header is row 1) and the row; missing trailing cells are ``""``.

    Raises
    ------
    DataError
        If the file cannot be read, is empty, or lacks a required column.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot open the CSV ({exc})", path=path) from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError("the CSV is empty; expected a header row", path=path)
        columns = [_normalise_header(c) if normalise else c.strip() for c in header]
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(
                f"missing column(s) {missing}; the header has {columns}. Use the file as published, "
                "with its original header",
                origin=f"{path.name} row 1",
                path=path,
            )
        # csv.reader counts physical lines for quoted multi-line cells; report the record number instead.
        for number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            padded = [*cells, *[""] * (len(columns) - len(cells))]
            yield number, {c: v.strip() for c, v in zip(columns, padded, strict=False)}


def dicom_size(path: Path) -> tuple[int, int]:
    """Return ``(rows, columns)`` from a DICOM header without reading the pixel data.

    Raises
    ------
    DataError
        If the file is missing, not DICOM, or has no Rows/Columns.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"cannot read the DICOM header ({type(exc).__name__}: {exc}); re-download it", path=path
        ) from None
    rows, cols = getattr(ds, "Rows", None), getattr(ds, "Columns", None)
    if not rows or not cols:
        raise DataError("the DICOM header has no Rows/Columns; it holds no image, re-download it", path=path)
    return int(rows), int(cols)


def resolve_cross_split(
    patient_splits: Mapping[str, set[str | None]], policy: str, source: str, fix: str
) -> dict[str, str | None]:
    """Decide, per patient found in several splits, which split it keeps.

    Parameters
    ----------
    patient_splits
        The splits each patient's images fall in (``None`` = not assigned yet, ranks with ``"train"``).
    policy
        ``"error"``: raise on the first such patient; ``"drop_train"``: the patient keeps only its
        images of the most held-out split (test > val > train/None) so evaluation sets stay intact.
    source, fix
        Data-set name and the fix quoted in the error.

    Returns
    -------
    dict[str, str | None]
        For each conflicting patient, the split whose images are kept.

    Raises
    ------
    DataError
        In ``"error"`` mode, naming the patients and their splits.
    ConfigError
        If ``policy`` is not one of ``("error", "drop_train")``.
    """
    check_choice("cross_split_patients", policy, CROSS_SPLIT)
    conflicts = {p: s for p, s in patient_splits.items() if len({_HELD_OUT_RANK[x] for x in s}) > 1}
    if not conflicts:
        return {}
    if policy == "error":
        shown = ", ".join(
            f"{p} in {sorted(x or 'unassigned' for x in s)}" for p, s in sorted(conflicts.items())[:_MAX_REASONS]
        )
        raise DataError(
            f"{len(conflicts)} patient(s) appear in several official splits ({shown}); a patient must not be "
            f"in both training and evaluation. {fix}",
            origin=source,
        )
    keep = {p: max(s, key=lambda x: _HELD_OUT_RANK[x]) for p, s in conflicts.items()}
    logger.warning(
        "%s: %d patient(s) appear in several official splits; kept only their most held-out split's images "
        "(cross_split_patients='drop_train'), e.g. %s",
        source,
        len(keep),
        ", ".join(f"{p} -> {s or 'unassigned'}" for p, s in sorted(keep.items())[:_MAX_REASONS]),
    )
    return keep
