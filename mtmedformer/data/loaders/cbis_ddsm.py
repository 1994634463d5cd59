"""Read CBIS-DDSM (TCIA) as downloaded: the case-description CSVs plus the DICOM tree, no conversion.

Accepted layout
---------------
``<root>/`` holds the case-description CSVs, as published by TCIA:

- ``mass_case_description_train_set.csv``, ``mass_case_description_test_set.csv``
- ``calc_case_description_train_set.csv``, ``calc_case_description_test_set.csv``

(only the two of the chosen type when ``abnormality`` is ``"mass"`` or ``"calc"``). Columns used,
compared case-insensitively with ``_`` and spaces equivalent (TCIA writes ``breast_density`` in the
mass CSVs and ``breast density`` in the calc CSVs): ``patient_id``, ``breast density``,
``left or right breast``, ``image view``, ``abnormality id``, ``abnormality type``, ``pathology``,
``image file path``, ``cropped image file path``, ``ROI mask file path``. Cells are stripped of the
stray spaces/newlines some of them carry.

The DICOM files are where the NBIA Data Retriever puts them, under ``<root>/CBIS-DDSM/`` or directly
under ``<root>/``::

    <Subject>/<study folder>/<series folder>/1-1.dcm          full mammogram, e.g. Mass-Training_P_00001_LCC
    <Subject>_<n>/<study folder>/<series folder>/1-1.dcm      ROI mask and cropped lesion of abnormality n
    <Subject>_<n>/<study folder>/<series folder>/1-2.dcm      (one or two series folders)

File resolution
---------------
The CSV paths (``Mass-Training_P_00001_LCC/1.3.6.../1.3.6.../000000.dcm``) name UID folders that the
downloaded tree does not have, so only their first component, the Subject folder name, is trusted:

- full image: the single DICOM under the Subject folder; if there are several, the literal CSV path is
  used when it exists (older "classic" downloads keep the UID folders), otherwise it is an error;
- ROI mask: among all DICOMs under the Subject folder(s) named by the ``ROI mask file path`` and
  ``cropped image file path`` cells, the one with the full image's Rows x Columns (read from the
  header alone). Only if several candidates have that size are their pixels read, and the mask is the
  binary one (at most two distinct values, one of them 0). File names and order are never used,
  because ``1-1.dcm``/``1-2.dcm`` (and even the CSV's ``000000``/``000001``) do not say which is which.

Mapping to records
------------------
- One :class:`~mtmedformer.data.records.Record` per full mammogram (per ``image file path`` Subject):
  its rows (one per abnormality) are merged, ``masks`` holds every abnormality's ROI mask (OR-merged
  when loaded), ``boxes_from_mask=True`` and ``boxes=None`` (detection targets are the mask's
  connected components; CBIS-DDSM publishes no boxes).
- ``label``: ``MALIGNANT`` -> ``"malignant"``, ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` ->
  ``"benign"`` (override with ``label_map``). **An image is malignant if any of its abnormalities is
  malignant**, benign otherwise: the image-level question is "does this mammogram show cancer". (With
  a custom ``label_map`` the image takes its most severe pathology: MALIGNANT, then BENIGN, then
  BENIGN_WITHOUT_CALLBACK.)
- ``split``: ``"train"`` for rows of a ``*_train_set.csv``, ``"test"`` for a ``*_test_set.csv`` (the
  official split, which has no validation part). With ``resplit_train=True`` the official training
  images get ``split=None`` instead, so the seeded patient split can carve a validation set from them.
  ``patient_id``: the CSV ``patient_id`` (``P_00001``). ``site``: ``None``.
- ``extra``: ``abnormality_type`` (``mass`` / ``calcification``), ``view`` (``CC``/``MLO``),
  ``laterality`` (``LEFT``/``RIGHT``), ``density`` (BI-RADS 1-4), ``subject`` (TCIA Subject name).
- TCIA keeps mass and calcification cases as separate series (``Mass-...``/``Calc-...`` Subjects), so
  with ``abnormality="both"`` a mammogram with both kinds of finding gives two records, each with the
  masks of its own kind. A patient whose images fall in both official splits (possible across the
  mass and calc sets) is an error, or with ``cross_split_patients="drop_train"`` keeps only its test
  images (one warning).

Bad rows
--------
A row is bad when a cell is missing or invalid, its files cannot be found or told apart, or it
contradicts the other rows of its image. ``on_bad_row="error"`` raises a
:class:`~mtmedformer.errors.DataError` naming the CSV row, the file and the fix; ``"skip"`` drops the
**whole image** of a bad row (a partial mask would mark a lesion as background) and logs one warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtmedformer.data.loaders._common import (
    BadRows,
    check_choice,
    dicom_size,
    label_mapping,
    list_dir,
    read_csv,
    resolve_cross_split,
)
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "CBIS-DDSM"
ABNORMALITIES: tuple[str, ...] = ("mass", "calc", "both")
DEFAULT_LABEL_MAP: dict[str, str] = {
    "MALIGNANT": "malignant",
    "BENIGN": "benign",
    "BENIGN_WITHOUT_CALLBACK": "benign",
}
SEVERITY: tuple[str, ...] = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")  # an image takes its worst finding
COLUMNS: tuple[str, ...] = (
    "patient id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "pathology",
    "image file path",
    "cropped image file path",
    "roi mask file path",
)


def csv_names(abnormality: str) -> list[tuple[str, str]]:
    """Return ``(csv file name, split)`` pairs read for ``abnormality`` ("mass", "calc" or "both")."""
    kinds = ("mass", "calc") if abnormality == "both" else (abnormality,)
    return [(f"{kind}_case_description_{split}_set.csv", split) for kind in kinds for split in ("train", "test")]


@dataclass
class _Image:
    """Rows of one full mammogram being merged."""

    subject: str
    split: str
    rows: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)  # (origin, row)
    bad: bool = False


class _Tree:
    """Finds DICOMs by TCIA Subject folder name under the accepted base folders, with caching."""

    def __init__(self, root: Path) -> None:
        self.bases = [b for b in (root / "CBIS-DDSM", root) if b.is_dir()]
        self._subjects: dict[str, Path] = {}
        for base in reversed(self.bases):  # <root>/CBIS-DDSM wins when a Subject is in both
            for entry in base.iterdir():
                if entry.is_dir():
                    self._subjects[entry.name] = entry
        self._files: dict[str, list[Path]] = {}
        self._sizes: dict[Path, tuple[int, int]] = {}

    def has_subjects(self) -> bool:
        return any(name.startswith(("Mass-", "Calc-")) for name in self._subjects)

    def folder(self, subject: str) -> Path | None:
        return self._subjects.get(subject)

    def dicoms(self, subject: str) -> list[Path] | None:
        """Sorted DICOMs under a Subject folder, or ``None`` when the folder is absent."""
        if subject not in self._subjects:
            return None
        if subject not in self._files:
            folder = self._subjects[subject]
            self._files[subject] = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file())
        return self._files[subject]

    def literal(self, csv_path: str) -> Path | None:
        for base in self.bases:
            candidate = base / csv_path.replace("\\", "/")
            if candidate.is_file():
                return candidate
        return None

    def size(self, path: Path) -> tuple[int, int]:
        if path not in self._sizes:
            self._sizes[path] = dicom_size(path)
        return self._sizes[path]

    def where(self) -> str:
        return " or ".join(str(b) for b in self.bases)


def _subject(csv_path: str) -> str:
    # Windows-made copies of the CSVs sometimes use backslashes.
    return csv_path.replace("\\", "/").strip("/").split("/")[0].strip()


def _is_binary(path: Path) -> bool:
    import pydicom

    try:
        pixels = pydicom.dcmread(path).pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise DataError(
            f"cannot read DICOM pixels to tell ROI mask from crop ({type(exc).__name__}: {exc}); re-download it",
            path=path,
        ) from None
    values = np.unique(pixels)
    return values.size <= 2 and values[0] == 0


def _full_image(tree: _Tree, csv_path: str, origin: str) -> Path:
    subject = _subject(csv_path)
    files = tree.dicoms(subject)
    if files is None:
        raise DataError(
            f"the full-image Subject folder '{subject}' (first part of 'image file path') is not under "
            f"{tree.where()}; download that series from TCIA or remove the row",
            origin=origin,
        )
    if len(files) == 1:
        return files[0]
    literal = tree.literal(csv_path)
    if literal is not None:
        return literal
    folder = tree.folder(subject)
    listing = ", ".join(str(f.relative_to(folder)) for f in files[:4]) if folder and files else "none"
    raise DataError(
        f"expected exactly one DICOM under Subject folder '{subject}', found {len(files)} ({listing}); keep only "
        "the full mammogram there",
        origin=origin,
    )


def _roi_mask(tree: _Tree, row: Mapping[str, str], image_size: tuple[int, int], origin: str) -> Path:
    subjects = dict.fromkeys(_subject(row[c]) for c in ("roi mask file path", "cropped image file path") if row[c])
    candidates: list[Path] = []
    for subject in subjects:
        candidates.extend(tree.dicoms(subject) or [])
    if not candidates:
        raise DataError(
            f"no DICOM found for the ROI Subject folder(s) {list(subjects)} (first part of 'ROI mask file path') "
            f"under {tree.where()}; download the ROI series of this case from TCIA or remove the row",
            origin=origin,
        )
    same_size = [c for c in candidates if tree.size(c) == image_size]
    if len(same_size) > 1:
        # Headers cannot decide (a crop as large as the image): the mask is the binary one.
        same_size = [c for c in same_size if _is_binary(c)]
    if len(same_size) == 1:
        return same_size[0]
    found = ", ".join(f"{c.name} {tree.size(c)[1]}x{tree.size(c)[0]}" for c in candidates)
    wanted = f"{image_size[1]}x{image_size[0]}"
    problem = "none has" if not same_size else f"{len(same_size)} binary DICOMs have"
    raise DataError(
        f"cannot identify the ROI mask in {list(subjects)}: {problem} the full image's size {wanted} (WxH) "
        f"(found {found}); re-download this abnormality's ROI series or remove the row",
        origin=origin,
    )


def _check_row(row: Mapping[str, str], mapping: Mapping[str, str], origin: str) -> None:
    for column in ("patient id", "image file path", "roi mask file path", "pathology", "abnormality id"):
        if not row[column]:
            raise DataError(f"the '{column}' cell is empty; fill it from the published CSV", origin=origin)
    if row["pathology"] not in mapping:
        raise DataError(f"unknown pathology '{row['pathology']}'; expected one of {sorted(mapping)}", origin=origin)


def _merge(image: _Image, tree: _Tree, mapping: Mapping[str, str]) -> Record:
    origins = [o for o, _ in image.rows]
    first_origin, first = image.rows[0]
    for origin, row in image.rows[1:]:
        for column in ("patient id", "left or right breast", "image view"):
            if row[column] != first[column]:
                raise DataError(
                    f"'{column}' is '{row[column]}' but {first_origin} gives '{first[column]}' for the same image "
                    f"'{image.subject}'; correct the row",
                    origin=origin,
                )
    ids = [row["abnormality id"] for _, row in image.rows]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise DataError(
            f"abnormality id(s) {duplicated} of image '{image.subject}' appear in several rows ({', '.join(origins)}); "
            "remove the duplicate rows",
            origin=first_origin,
        )
    path = _full_image(tree, first["image file path"], first_origin)
    size = tree.size(path)
    masks = tuple(_roi_mask(tree, row, size, origin) for origin, row in image.rows)
    pathologies = [row["pathology"] for _, row in image.rows]
    label_key = min(pathologies, key=SEVERITY.index)
    types = sorted({row["abnormality type"] for _, row in image.rows if row["abnormality type"]})
    return Record(
        image=path,
        patient_id=first["patient id"],
        label=mapping[label_key],
        masks=masks,
        boxes=None,
        boxes_from_mask=True,
        split=image.split,
        site=None,
        origin=origins[0] if len(origins) == 1 else f"{origins[0]} (+{len(origins) - 1} rows)",
        extra={
            "abnormality_type": ",".join(types),
            "view": first["image view"],
            "laterality": first["left or right breast"],
            "density": first["breast density"],
            "subject": image.subject,
        },
    )


def load_cbis_ddsm(
    root: str | Path,
    classes: Sequence[str],
    *,
    on_bad_row: str = "error",
    abnormality: str = "both",
    label_map: Mapping[str, str] | None = None,
    cross_split_patients: str = "error",
    resplit_train: bool = False,
) -> list[Record]:
    """Read CBIS-DDSM from its TCIA download into one record per full mammogram.

    Parameters
    ----------
    root
        Folder holding the case-description CSVs and the DICOM tree (see the module docstring).
    classes
        Configured class names; must contain the mapped names (default ``"benign"``, ``"malignant"``).
    on_bad_row
        ``"error"`` (default) raises on the first bad row; ``"skip"`` drops the images of bad rows and
        logs one warning with the count and the first reasons.
    abnormality
        Which CSVs to read: ``"mass"``, ``"calc"`` or ``"both"`` (default).
    label_map
        Pathology -> class name, replacing the default
        ``{"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}``.
    cross_split_patients
        A patient with images in both official splits: ``"error"`` (default) or ``"drop_train"`` (keep
        only its test images, one warning).
    resplit_train
        Give official training images ``split=None`` (assigned later by the seeded patient split, e.g.
        to make a validation set) instead of ``"train"``; default ``False``.

    Returns
    -------
    list[Record]
        One record per full mammogram, ordered by CSV then row.

    Raises
    ------
    ConfigError
        If an option is invalid or the mapped class names are not in ``classes``.
    DataError
        If ``root`` does not have the expected CSVs / DICOM folders, or (``on_bad_row="error"``) a row is bad.
    """
    check_choice("abnormality", abnormality, ABNORMALITIES)
    mapping = label_mapping(classes, label_map, DEFAULT_LABEL_MAP, SOURCE)
    bad = BadRows(on_bad_row, SOURCE, unit="rows")
    root = Path(root).expanduser()
    names = csv_names(abnormality)
    missing = [name for name, _ in names if not (root / name).is_file()]
    if missing:
        other = " (or choose abnormality 'mass' or 'calc' to read one kind)" if abnormality == "both" else ""
        raise DataError(
            f"not a CBIS-DDSM root: missing {missing} for abnormality='{abnormality}' ({list_dir(root)}). Put the "
            f"TCIA case-description CSVs directly in the data root{other}",
            path=root,
        )
    tree = _Tree(root)
    if not tree.has_subjects():
        raise DataError(
            "not a CBIS-DDSM root: no 'Mass-*'/'Calc-*' Subject folders under "
            f"{root / 'CBIS-DDSM'} or {root} ({list_dir(root)}). Point the data root at the folder that holds "
            "the NBIA download ('CBIS-DDSM/') and the CSVs",
            path=root,
        )
    images: dict[str, _Image] = {}
    for name, split in names:
        for number, row in read_csv(root / name, COLUMNS, normalise=True):
            origin = f"{name} row {number}"
            subject = _subject(row["image file path"])
            image = images.setdefault(subject, _Image(subject=subject, split=split))
            image.rows.append((origin, row))
            try:
                _check_row(row, mapping, origin)
                if image.split != split:
                    raise DataError(
                        f"image '{subject}' is also listed in the {image.split} CSV ({image.rows[0][0]}); remove "
                        "the duplicate",
                        origin=origin,
                    )
            except DataError as exc:
                image.bad = True
                bad.report(exc)
    records: list[Record] = []
    for image in images.values():
        if image.bad:
            continue
        try:
            records.append(_merge(image, tree, mapping))
        except DataError as exc:
            bad.report(exc)
    bad.warn()
    keep = resolve_cross_split(
        _splits_by_patient(records),
        cross_split_patients,
        SOURCE,
        "Remove the patient's rows from one CSV (or read one abnormality kind), or pass "
        "cross_split_patients='drop_train' to keep only its test images",
    )
    records = [r for r in records if r.patient_id not in keep or r.split == keep[r.patient_id]]
    if resplit_train:
        records = [dataclasses.replace(r, split=None) if r.split == "train" else r for r in records]
    rows = sum(len(image.rows) for image in images.values())
    logger.info("%s: %d images from %d rows under %s", SOURCE, len(records), rows, root)
    return records


def _splits_by_patient(records: Sequence[Record]) -> dict[str, set[str | None]]:
    splits: dict[str, set[str | None]] = {}
    for record in records:
        splits.setdefault(record.patient_id, set()).add(record.split)
    return splits
