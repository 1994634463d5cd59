"""Read the generic manifest CSV into :class:`~mtmedformer.data.records.Record` objects, checking every row.

Format (UTF-8 CSV, one row per image, header on row 1; column names are matched case-insensitively):

=============  ========  ===================================================================================
column         required  content
=============  ========  ===================================================================================
``image``      yes       path relative to the CSV's folder: PNG, JPEG, 16-bit PNG, DICOM or 2D NIfTI
``label``      no        a class name from ``classes``; empty = classification not annotated
``mask``       no        mask path(s) of the image's size, non-zero = lesion; several paths separated by ``;``
                         are OR-merged; all-zero = annotated, no lesion; empty = not annotated
``boxes``      no        JSON list of ``[x0, y0, x1, y1]`` in the image's pixels (x = column, pixel-edge
                         coordinates, see :mod:`mtmedformer.data.boxes`); ``[]`` = annotated, no lesion;
                         ``from_mask`` = the connected components of the mask; empty = not annotated
``patient_id`` no        patient identifier; default: the image file name without extension, i.e. every
                         image is its own patient (a warning says so, as splits cannot then keep a patient's
                         images together)
``split``      no        ``train``, ``val``, ``test`` or empty (assigned later by a seeded patient split)
``site``       no        hospital / acquisition site; empty = the ``site`` argument of :func:`read_manifest`
=============  ========  ===================================================================================

Any other column is kept as text in ``Record.extra``, unless its name looks like a misspelt known column
(``lable``), which is an error. Sizes of images and masks are read from file headers only; pixels are
decoded by ``mtmedformer check-data`` (:mod:`mtmedformer.data.decode_check`) and when the dataset loads an
image.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from mtmedformer.config.loader import suggest
from mtmedformer.data.boxes import box_problem
from mtmedformer.data.records import SPLITS, Box, Record
from mtmedformer.data.splits import check_patient_splits
from mtmedformer.data.validate import check_image_file, image_shape, image_suffix
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = ("image", "label", "mask", "boxes", "patient_id", "split", "site")
BOXES_FROM_MASK = "from_mask"
_SHOWN_REASONS = 3  # skipped-row reasons quoted in the summary warning


@dataclass
class ManifestResult:
    """What :func:`read_manifest` read (and :func:`~mtmedformer.data.decode_check.decode_records` kept).

    Attributes
    ----------
    records
        One record per accepted row, in file order.
    skipped
        One reason per skipped row (``on_bad_row="skip"``), each naming the row and file.
    """

    records: list[Record]
    skipped: list[str] = field(default_factory=list)


def shown_reasons(skipped: list[str]) -> str:
    """The first few skip reasons joined for one summary warning (``; ...`` when there are more)."""
    return "; ".join(skipped[:_SHOWN_REASONS]) + ("; ..." if len(skipped) > _SHOWN_REASONS else "")


def _read_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    if not csv_path.is_file():
        why = "is a folder" if csv_path.is_dir() else "does not exist"
        raise DataError(f"manifest CSV {why}; give the path of the CSV file", path=csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            # line_num after a row = the line it ends on, i.e. the row number an editor shows (header = 1).
            return [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest is not UTF-8 text ({exc}); save it as a UTF-8 CSV", path=csv_path) from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read the manifest ({exc}); check it is a readable CSV file", path=csv_path) from None


def _column_index(header: list[str], csv_path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Map known column names and extra column names to their positions, rejecting misspelt known names."""
    known: dict[str, int] = {}
    extra: dict[str, int] = {}
    origin = f"{csv_path} row 1"
    present = {h.strip().lower() for h in header}
    for position, raw in enumerate(header):
        name = raw.strip()
        key = name.lower()
        if not name:
            raise DataError(f"column {position + 1} of the header has no name; name it or delete it", origin=origin)
        if key in known or name in extra:
            raise DataError(f"column '{name}' appears twice in the header; keep one", origin=origin)
        if key in COLUMNS:
            known[key] = position
            continue
        close = difflib.get_close_matches(key, [c for c in COLUMNS if c not in present], n=1, cutoff=0.8)
        if close:
            raise DataError(
                f"unknown column '{name}'. Did you mean '{close[0]}'? Rename it (known columns: {', '.join(COLUMNS)})",
                origin=origin,
            )
        extra[name] = position
    if "image" not in known:
        raise DataError(
            f"the header has no 'image' column (found: {', '.join(h.strip() for h in header)}); add a column "
            "'image' with each image's path relative to the CSV",
            origin=origin,
        )
    return known, extra


def _parse_label(cell: str, classes: tuple[str, ...], origin: str, image: Path) -> str | None:
    if not cell:
        return None
    if cell not in classes:
        raise DataError(
            f"unknown label '{cell}'.{suggest(cell, classes)} Use one of {list(classes)} (labels are case-sensitive), "
            "leave the cell empty if the image is not labelled, or add the class to data.classes",
            origin=origin,
            path=image,
        )
    return cell


def _parse_boxes(cell: str, origin: str, image: Path) -> tuple[Box, ...]:
    try:
        value = json.loads(cell)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"boxes cell {cell!r} is not valid JSON ({exc.msg}); write e.g. [[10, 20, 50, 60]] or [] for no lesion",
            origin=origin,
            path=image,
        ) from None
    if not isinstance(value, list):
        raise DataError(
            f"boxes cell {cell!r} is not a JSON list; write e.g. [[10, 20, 50, 60]]", origin=origin, path=image
        )
    boxes = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
        ):
            raise DataError(
                f"boxes entry {json.dumps(item)} is not a list of 4 numbers; write each box as [x0, y0, x1, y1]",
                origin=origin,
                path=image,
            )
        if not all(math.isfinite(v) for v in item):
            raise DataError(
                f"box {item} has a NaN or infinite coordinate; give finite pixel coordinates", origin=origin, path=image
            )
        boxes.append(tuple(float(v) for v in item))
    return tuple(boxes)  # type: ignore[return-value]


def _parse_row(
    cells: dict[str, str],
    extra: dict[str, str],
    csv_dir: Path,
    classes: tuple[str, ...],
    origin: str,
    default_site: str | None,
) -> tuple[Record, bool]:
    """Turn one row into a Record; the bool says whether ``patient_id`` was given.

    File checks raise :class:`DataError` without an origin; the caller adds the row.
    """
    if not cells["image"]:
        raise DataError("the image cell is empty; give the image path relative to the CSV", origin=origin)
    image = csv_dir / cells["image"]
    check_image_file(image, "image")
    label = _parse_label(cells.get("label", ""), classes, origin, image)

    masks = None
    if cells.get("mask"):
        masks = tuple(csv_dir / part.strip() for part in cells["mask"].split(";") if part.strip()) or None
        for mask in masks:
            check_image_file(mask, "mask")

    boxes_cell = cells.get("boxes", "")
    boxes_from_mask = boxes_cell == BOXES_FROM_MASK
    if boxes_from_mask and masks is None:
        raise DataError(
            f"boxes is '{BOXES_FROM_MASK}' but the mask cell is empty; give a mask or explicit boxes",
            origin=origin,
            path=image,
        )
    boxes = _parse_boxes(boxes_cell, origin, image) if boxes_cell and not boxes_from_mask else None

    if masks or boxes:
        shape = image_shape(image)
        for mask in masks or ():
            mask_shape = image_shape(mask)
            if mask_shape != shape:
                raise DataError(
                    f"mask is {mask_shape[1]}x{mask_shape[0]} (WxH) but its image {image} is {shape[1]}x{shape[0]}; "
                    "masks must have exactly the image's size (re-export the mask at full resolution)",
                    origin=origin,
                    path=mask,
                )
        for box in boxes or ():
            problem = box_problem(box, shape)
            if problem:
                raise DataError(problem, origin=origin, path=image)

    split = cells.get("split") or None
    if split is not None and split not in SPLITS:
        raise DataError(
            f"split '{split}' is not one of {list(SPLITS)}.{suggest(split, SPLITS)} Leave it empty to have it assigned",
            origin=origin,
            path=image,
        )
    patient_id = cells.get("patient_id", "")
    given = bool(patient_id)
    if not given:
        patient_id = image.name[: len(image.name) - len(image_suffix(image))]
    record = Record(
        image=image,
        patient_id=patient_id,
        label=label,
        masks=masks,
        boxes=boxes,
        boxes_from_mask=boxes_from_mask,
        split=split,
        site=cells.get("site") or default_site,
        origin=origin,
        extra=extra,
    )
    return record, given


def read_manifest(
    csv_path: str | Path, classes: tuple[str, ...] | list[str], *, on_bad_row: str = "error", site: str | None = None
) -> ManifestResult:
    """Read and check a manifest CSV (format in the module docstring).

    Parameters
    ----------
    csv_path
        The CSV file; image and mask paths in it are relative to its folder.
    classes
        The class names labels must come from.
    on_bad_row
        ``"error"`` (default): the first bad row raises. ``"skip"``: bad rows are dropped and counted in one
        warning; problems of the whole manifest (unreadable, no rows, no ``image`` column, misspelt column,
        a patient in two splits) still raise.
    site
        Site of rows whose ``site`` cell is empty or missing; ``None`` = unknown.

    Returns
    -------
    ManifestResult
        The records and the reasons rows were skipped.

    Raises
    ------
    DataError
        Naming the row (header = row 1), the file and the fix, for: a missing or unreadable CSV, no data rows,
        missing or misspelt columns, a row with the wrong number of cells, a missing image or mask file, an
        unsupported extension, a mask whose size differs from its image, a malformed, non-finite, empty or
        out-of-image box, an unknown label or split, a duplicate image, or a patient in two splits.
    ValueError
        If ``on_bad_row`` or ``classes`` is invalid.
    """
    if on_bad_row not in ("error", "skip"):
        hint = suggest(str(on_bad_row), ["error", "skip"])
        raise ValueError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}.{hint}")
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be non-empty and unique, got {list(classes)}")
    csv_path = Path(csv_path)
    rows = [(n, row) for n, row in _read_rows(csv_path) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(
            "manifest is empty; it needs a header row (at least 'image') and one row per image", path=csv_path
        )
    header = rows[0][1]
    known, extra_cols = _column_index(header, csv_path)
    if len(rows) == 1:
        raise DataError("manifest has a header but no data rows; add one row per image", path=csv_path)

    records: list[Record] = []
    skipped: list[str] = []
    first_row_of_image: dict[Path, str] = {}
    any_patient_missing = False
    for line, row in rows[1:]:
        origin = f"{csv_path} row {line}"
        try:
            if len(row) != len(header):
                raise DataError(
                    f"row has {len(row)} cells but the header has {len(header)}; quote cells that "
                    "contain commas (the boxes JSON does)",
                    origin=origin,
                )
            cells = {key: row[i].strip() for key, i in known.items()}
            extra = {name: row[i] for name, i in extra_cols.items()}
            record, given = _parse_row(cells, extra, csv_path.parent, classes, origin, site)
            key = record.image.resolve()
            if key in first_row_of_image:
                raise DataError(
                    f"image already listed at {first_row_of_image[key]}; list each image once with all "
                    "its annotations in that row",
                    origin=origin,
                    path=record.image,
                )
        except DataError as exc:
            if exc.origin is None:  # raised by a file check that does not know the row
                exc = DataError(exc.reason, origin=origin, path=exc.path)
            if on_bad_row == "error":
                raise exc from None
            skipped.append(str(exc))
            continue
        first_row_of_image[key] = origin
        any_patient_missing |= not given
        records.append(record)

    if skipped:
        logger.warning(
            "skipped %d of %d rows of %s (on_bad_row='skip'): %s", len(skipped), len(rows) - 1, csv_path,
            shown_reasons(skipped),
        )
    if not records:
        raise DataError(f"no usable rows: all {len(skipped)} data rows were skipped, e.g. {skipped[0]}", path=csv_path)
    if any_patient_missing:
        logger.warning(
            "%s: rows without patient_id are treated as one patient per image; add a patient_id column "
            "so that a patient's images stay in one split",
            csv_path,
        )
    check_patient_splits(records)
    return ManifestResult(records=records, skipped=skipped)
