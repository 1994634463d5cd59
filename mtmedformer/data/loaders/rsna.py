"""Read the RSNA Pneumonia Detection Challenge (stage 2) training set as published, no conversion.

Accepted layout
---------------
::

    <root>/stage_2_train_labels.csv              patientId,x,y,width,height,Target
    <root>/stage_2_train_images/<patientId>.dcm  one chest radiograph per patient
    <root>/stage_2_detailed_class_info.csv       optional: patientId,class

``stage_2_test_images/`` (no labels) is not read.

Mapping to records
------------------
- One :class:`~mtmedformer.data.records.Record` per ``patientId`` (the challenge has one image per
  patient), ``image`` = ``stage_2_train_images/<patientId>.dcm``, ``patient_id`` = ``patientId``.
- Rows with ``Target`` 1 each give one box ``(x, y, x + width, y + height)`` in pixels (xyxy); a
  patient may have several. Rows with ``Target`` 0 have empty ``x, y, width, height`` and mean
  "annotated, no opacity": ``boxes = ()``.
- ``label``: Target 1 -> ``"pneumonia"``, Target 0 -> ``"normal"`` (override with ``label_map``, keys
  ``"0"`` and ``"1"``); both names must be in ``classes``.
- ``masks=None`` (not annotated), ``split=None`` (there is no official split: the seeded patient split
  assigns it later), ``site=None``.
- ``stage_2_detailed_class_info.csv``, when present, is a consistency check and goes to
  ``extra["detailed_class"]``: ``"Lung Opacity"`` must go with Target 1, ``"Normal"`` and
  ``"No Lung Opacity / Not Normal"`` with Target 0. It does not change the binary label (the
  "not normal" patients are negatives for pneumonia). Patients it does not list get no
  ``detailed_class``.

Bad rows
--------
A patient is bad when a row has a non-numeric or non-positive value, a Target other than 0/1, a
Target 1 row without a box or a Target 0 row with one, rows with both Targets, a missing or unreadable
DICOM, a box outside the image (checked against the DICOM header's Rows/Columns, pixels are not
read), or a detailed class contradicting its Target. ``on_bad_row="error"`` raises a
:class:`~mtmedformer.errors.DataError` naming the CSV row / file and the fix; ``"skip"`` drops the
patient and logs one warning with the count.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from mtmedformer.data.loaders._common import BadRows, dicom_size, label_mapping, list_dir, read_csv
from mtmedformer.data.records import Box, Record
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "RSNA"
LABELS_CSV = "stage_2_train_labels.csv"
IMAGES_DIR = "stage_2_train_images"
CLASS_INFO_CSV = "stage_2_detailed_class_info.csv"
COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
DEFAULT_LABEL_MAP: dict[str, str] = {"0": "normal", "1": "pneumonia"}
DETAILED_CLASS_TARGET: dict[str, str] = {
    "Lung Opacity": "1",
    "Normal": "0",
    "No Lung Opacity / Not Normal": "0",
}
_BOX_COLUMNS = ("x", "y", "width", "height")


def _row_box(row: Mapping[str, str], origin: str) -> Box | None:
    """Validate one label row; return its xyxy box (Target 1) or ``None`` (Target 0)."""
    target = row["Target"]
    if target not in ("0", "1"):
        raise DataError(f"Target must be 0 or 1, got '{target}'; correct the row", origin=origin)
    cells = [row[c] for c in _BOX_COLUMNS]
    if target == "0":
        if any(cells):
            raise DataError(
                f"a Target 0 row (no opacity) must leave x, y, width, height empty, got {cells}; set Target to 1 "
                "or clear the box",
                origin=origin,
            )
        return None
    if not all(cells):
        raise DataError(
            f"a Target 1 row needs a box, but x, y, width, height are {cells}; fill them or set Target to 0",
            origin=origin,
        )
    try:
        x, y, width, height = (float(c) for c in cells)
    except ValueError:
        raise DataError(f"x, y, width, height must be numbers, got {cells}; correct the row", origin=origin) from None
    if not all(math.isfinite(v) for v in (x, y, width, height)) or width <= 0 or height <= 0:
        raise DataError(
            f"the box needs finite values and width, height > 0, got {cells}; correct the row", origin=origin
        )
    return (x, y, x + width, y + height)


def _read_class_info(path: Path, bad: BadRows) -> dict[str, tuple[str, str]]:
    """Return ``patientId -> (class, origin)``; contradicting or unknown classes are reported as bad rows."""
    classes: dict[str, tuple[str, str]] = {}
    for number, row in read_csv(path, ("patientId", "class")):
        origin = f"{CLASS_INFO_CSV} row {number}"
        value = row["class"]
        try:
            if value not in DETAILED_CLASS_TARGET:
                raise DataError(
                    f"unknown class '{value}'; expected one of {sorted(DETAILED_CLASS_TARGET)}", origin=origin
                )
            previous = classes.get(row["patientId"])
            if previous is not None and previous[0] != value:
                raise DataError(
                    f"patient {row['patientId']} is '{value}' here but '{previous[0]}' in {previous[1]}; keep one "
                    "class per patient",
                    origin=origin,
                )
        except DataError as exc:
            bad.report(exc)
            continue
        classes.setdefault(row["patientId"], (value, origin))
    return classes


def _patient_record(
    patient: str,
    rows: list[tuple[str, Mapping[str, str]]],
    images: Path,
    mapping: Mapping[str, str],
    detailed: tuple[str, str] | None,
) -> Record:
    first_origin = rows[0][0]
    if not patient or "/" in patient or "\\" in patient:
        raise DataError(f"patientId '{patient}' is not a file name; correct the row", origin=first_origin)
    boxes = [(origin, _row_box(row, origin)) for origin, row in rows]
    targets = {row["Target"] for _, row in rows}
    if len(targets) > 1:
        raise DataError(
            f"patient {patient} has both Target 0 and Target 1 rows ({', '.join(o for o, _ in rows)}); a patient is "
            "either positive (boxes) or negative (one Target 0 row): remove the wrong rows",
            origin=first_origin,
        )
    target = targets.pop()
    path = images / f"{patient}.dcm"
    if not path.is_file():
        raise DataError(
            f"the DICOM of patient {patient} is missing; put it in {IMAGES_DIR}/ or remove its rows",
            origin=first_origin,
            path=path,
        )
    kept: tuple[Box, ...] = tuple(box for _, box in boxes if box is not None)
    if kept:
        rows_px, cols_px = dicom_size(path)
        for origin, box in boxes:
            if box is not None and (box[0] < 0 or box[1] < 0 or box[2] > cols_px or box[3] > rows_px):
                raise DataError(
                    f"box {box} (x0, y0, x1, y1) lies outside the {cols_px}x{rows_px} (WxH) image; correct the box or "
                    "remove the row",
                    origin=origin,
                    path=path,
                )
    extra: dict[str, str] = {}
    if detailed is not None:
        value, origin = detailed
        if DETAILED_CLASS_TARGET[value] != target:
            raise DataError(
                f"patient {patient} has Target {target} in {LABELS_CSV} ({first_origin}) but class '{value}'; fix "
                f"whichever file is wrong, or remove {CLASS_INFO_CSV} to skip this check",
                origin=origin,
            )
        extra["detailed_class"] = value
    return Record(
        image=path,
        patient_id=patient,
        label=mapping[target],
        masks=None,
        boxes=kept,
        boxes_from_mask=False,
        split=None,
        site=None,
        origin=first_origin if len(rows) == 1 else f"{first_origin} (+{len(rows) - 1} rows)",
        extra=extra,
    )


def load_rsna(
    root: str | Path,
    classes: Sequence[str],
    *,
    on_bad_row: str = "error",
    label_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read the RSNA Pneumonia Detection stage-2 training set into one record per patient.

    Parameters
    ----------
    root
        Folder holding ``stage_2_train_labels.csv`` and ``stage_2_train_images/`` (see the module docstring).
    classes
        Configured class names; must contain the mapped names (default ``"normal"``, ``"pneumonia"``).
    on_bad_row
        ``"error"`` (default) raises on the first bad patient; ``"skip"`` drops bad patients and logs
        one warning with the count and the first reasons.
    label_map
        Target -> class name, replacing the default ``{"0": "normal", "1": "pneumonia"}``.

    Returns
    -------
    list[Record]
        One record per patient in CSV order, ``boxes`` xyxy in pixels (``()`` for Target 0),
        ``split=None``.

    Raises
    ------
    ConfigError
        If ``on_bad_row`` is invalid or the mapped class names are not in ``classes``.
    DataError
        If ``root`` lacks the labels CSV or image folder, or (``on_bad_row="error"``) a row is bad.
    """
    mapping = label_mapping(classes, label_map, DEFAULT_LABEL_MAP, SOURCE)
    bad = BadRows(on_bad_row, SOURCE, unit="rows")
    root = Path(root).expanduser()
    labels, images = root / LABELS_CSV, root / IMAGES_DIR
    if not labels.is_file() or not images.is_dir():
        raise DataError(
            f"not an RSNA Pneumonia root: expected {LABELS_CSV} and {IMAGES_DIR}/ ({list_dir(root)}). Point the data "
            "root at the unzipped Kaggle competition folder",
            path=root,
        )
    detailed = _read_class_info(root / CLASS_INFO_CSV, bad) if (root / CLASS_INFO_CSV).is_file() else {}
    patients: dict[str, list[tuple[str, Mapping[str, str]]]] = {}
    for number, row in read_csv(labels, COLUMNS):
        patients.setdefault(row["patientId"], []).append((f"{LABELS_CSV} row {number}", row))
    records: list[Record] = []
    for patient, rows in patients.items():
        try:
            records.append(_patient_record(patient, rows, images, mapping, detailed.get(patient)))
        except DataError as exc:
            bad.report(exc)
    bad.warn()
    positives = sum(1 for r in records if r.boxes)
    logger.info("%s: %d patients (%d with boxes) under %s", SOURCE, len(records), positives, root)
    return records
