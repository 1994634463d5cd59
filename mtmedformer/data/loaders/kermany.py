"""Read the Kermany et al. pediatric chest X-ray set (Mendeley "ChestXRay2017") as published.

Accepted layout
---------------
::

    <root>/chest_xray/train/NORMAL/*.jpeg       and   .../train/PNEUMONIA/*.jpeg
    <root>/chest_xray/test/NORMAL/*.jpeg        and   .../test/PNEUMONIA/*.jpeg
    <root>/chest_xray/val/{NORMAL,PNEUMONIA}/   optional (the Kaggle re-release adds it, 16 images)

``<root>`` may also be the ``chest_xray`` folder itself. Other entries of ``chest_xray/`` (the Kaggle
zip's ``__MACOSX/`` or nested ``chest_xray/`` copy) are ignored; hidden files (``.DS_Store``) in the
class folders are ignored, any other non-JPEG entry there is a bad row.

Mapping to records
------------------
- ``label``: folder ``NORMAL`` -> ``"normal"``, ``PNEUMONIA`` -> ``"pneumonia"`` (override with
  ``label_map``); both names must be in ``classes``.
- ``patient_id`` = ``<cohort>/<patient>``: the patient part comes from the file name,
  ``IM-0115-0001.jpeg`` and ``IM-0429-0001-0002.jpeg`` -> ``IM-0115`` / ``IM-0429``,
  ``NORMAL2-IM-1427-0001.jpeg`` and ``NORMAL2-IM-0173-0001-0002.jpeg`` -> ``NORMAL2-IM-1427`` /
  ``NORMAL2-IM-0173`` (NORMAL folder, every file-name pattern of the published set);
  ``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg`` and ``person447_virus_921_1.jpeg`` -> ``person1`` /
  ``person447`` (PNEUMONIA folder), with ``extra["subtype"]`` = ``"bacteria"`` / ``"virus"``.
  ``extra["official_split"]`` keeps the folder.
- ``<cohort>`` is ``test`` for the official test folder and ``train`` for the official train and val
  folders. Why: the published numbers identify a child *within* one cohort, not across the set. Kermany et
  al. (Cell 2018) describe the test images as coming from patients other than the training patients, yet
  many ``personN`` numbers of the published test folder also occur in its train folder: read as
  global ids they would put those children in both (``docs/real-data.md`` has the count). The Kaggle
  ``val`` folder was carved out of the train folder, so it shares the train numbering. Within a cohort a
  number still groups one child's images, which keeps them in one split.
- ``split``: the official ``val`` folder holds only 16 images, so by default official train and val
  are merged with ``split=None`` (the seeded patient-level split assigns train/val later) and official
  test stays ``"test"``. With ``keep_official_val=True`` the folders give ``"train"``/``"val"``/``"test"``.
  The set as published on Mendeley has no ``val`` folder at all; that is accepted (one info line).
- A patient found in more than one of the resulting splits (only possible with ``keep_official_val``, or a
  renamed file) is an error, or with ``cross_split_patients="drop_train"`` keeps only the images of its most
  held-out split (one warning).
- ``masks=None`` and ``boxes=None``: the set has no lesion annotations. ``site=None``.

Bad rows
--------
A file whose name does not follow its folder's pattern, or that is not a JPEG, raises a
:class:`~mtmedformer.errors.DataError` naming the file (``on_bad_row="error"``) or is skipped with one
warning (``"skip"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from mtmedformer.data.loaders._common import BadRows, label_mapping, list_dir, resolve_cross_split
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

SOURCE = "Kermany"
DEFAULT_LABEL_MAP: dict[str, str] = {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
REQUIRED_SPLITS: tuple[str, ...] = ("train", "test")
OPTIONAL_SPLITS: tuple[str, ...] = ("val",)
JPEG_SUFFIXES: tuple[str, ...] = (".jpeg", ".jpg")
# Every file-name pattern of the published set: an image number may carry further "-NNNN" / "_N" parts
# (IM-0429-0001-0002.jpeg, NORMAL2-IM-0173-0001-0002.jpeg, person447_virus_921_1.jpeg).
_PATTERNS: dict[str, re.Pattern[str]] = {
    "NORMAL": re.compile(r"(?P<patient>(?:NORMAL2-)?IM-\d+)(?:-\d+)+"),
    "PNEUMONIA": re.compile(r"(?P<patient>person\d+)_(?P<subtype>bacteria|virus)(?:_\d+)+"),
}
_EXAMPLES = {
    "NORMAL": "'IM-0115-0001.jpeg', 'IM-0429-0001-0002.jpeg' or 'NORMAL2-IM-1427-0001.jpeg'",
    "PNEUMONIA": "'person1_bacteria_1.jpeg' or 'person1_virus_6.jpeg'",
}
TEST_COHORT = "test"
TRAIN_COHORT = "train"  # the official train folder and the Kaggle val folder carved out of it


def _find_base(root: Path) -> Path:
    for base in (root, root / "chest_xray"):
        if all((base / split).is_dir() for split in REQUIRED_SPLITS):
            return base
    raise DataError(
        f"not a Kermany chest_xray root: expected chest_xray/{{train,test}}/{{NORMAL,PNEUMONIA}}/ under it or "
        f"{{train,test}}/ directly ({list_dir(root)}). Point the data root at the unzipped ChestXRay2017 folder",
        path=root,
    )


def _parse(path: Path, folder: str) -> tuple[str, dict[str, str]]:
    """Return ``(patient_id, extra)`` from an image's file name; raise naming the expected pattern."""
    if path.suffix.lower() not in JPEG_SUFFIXES or not path.is_file():
        raise DataError(f"not a JPEG image; remove it from {folder}/", path=path)
    match = _PATTERNS[folder].fullmatch(path.stem)
    if match is None:
        raise DataError(
            f"cannot read the patient id from the file name; {folder} images are named like {_EXAMPLES[folder]}. "
            "Rename it to that pattern (a unique patient number) or remove it",
            path=path,
        )
    extra = {"subtype": match["subtype"]} if "subtype" in match.groupdict() else {}
    return match["patient"], extra


def load_kermany(
    root: str | Path,
    classes: Sequence[str],
    *,
    on_bad_row: str = "error",
    keep_official_val: bool = False,
    label_map: Mapping[str, str] | None = None,
    cross_split_patients: str = "error",
) -> list[Record]:
    """Read the Kermany chest X-ray folders into one record per image.

    Parameters
    ----------
    root
        The folder holding ``chest_xray/``, or ``chest_xray/`` itself (see the module docstring).
    classes
        Configured class names; must contain the mapped names (default ``"normal"``, ``"pneumonia"``).
    on_bad_row
        ``"error"`` (default) raises on the first bad file; ``"skip"`` drops bad files and logs one
        warning with the count and the first reasons.
    keep_official_val
        Keep the official train/val folders as ``"train"``/``"val"`` instead of merging them with
        ``split=None`` (default ``False``).
    label_map
        Folder -> class name, replacing the default ``{"NORMAL": "normal", "PNEUMONIA": "pneumonia"}``.
    cross_split_patients
        A patient in several splits: ``"error"`` (default) or ``"drop_train"`` (keep only its most
        held-out split's images, one warning).

    Returns
    -------
    list[Record]
        One record per image, sorted by split folder, class folder and file name.

    Raises
    ------
    ConfigError
        If an option is invalid or the mapped class names are not in ``classes``.
    DataError
        If ``root`` lacks the expected folders, (``on_bad_row="error"``) a file name cannot be parsed,
        or (``cross_split_patients="error"``) a patient is in several splits.
    """
    mapping = label_mapping(classes, label_map, DEFAULT_LABEL_MAP, SOURCE)
    bad = BadRows(on_bad_row, SOURCE, unit="files")
    root = Path(root).expanduser()
    base = _find_base(root)
    splits = [s for s in (*REQUIRED_SPLITS, *OPTIONAL_SPLITS) if (base / s).is_dir()]
    if "val" not in splits:
        logger.info("%s: no val/ folder under %s (the set as published has train/ and test/ only)", SOURCE, base)
    for official in splits:
        missing = [c for c in DEFAULT_LABEL_MAP if not (base / official / c).is_dir()]
        if missing:
            raise DataError(
                f"not a Kermany chest_xray root: {official}/ lacks the class folder(s) {missing} "
                f"({list_dir(base / official)}); each split folder needs NORMAL/ and PNEUMONIA/",
                path=base / official,
            )
    records: list[Record] = []
    for official in sorted(splits, key=("train", "val", "test").index):
        split = official if keep_official_val or official == "test" else None
        for folder in DEFAULT_LABEL_MAP:
            for path in sorted((base / official / folder).iterdir()):
                if path.name.startswith("."):
                    continue
                try:
                    patient, extra = _parse(path, folder)
                except DataError as exc:
                    bad.report(exc)
                    continue
                cohort = TEST_COHORT if official == "test" else TRAIN_COHORT
                records.append(
                    Record(
                        image=path,
                        patient_id=f"{cohort}/{patient}",
                        label=mapping[folder],
                        masks=None,
                        boxes=None,
                        boxes_from_mask=False,
                        split=split,
                        site=None,
                        origin=f"{official}/{folder}/{path.name}",
                        extra={**extra, "official_split": official},
                    )
                )
    bad.warn()
    patient_splits: dict[str, set[str | None]] = {}
    for record in records:
        patient_splits.setdefault(record.patient_id, set()).add(record.split)
    keep = resolve_cross_split(
        patient_splits,
        cross_split_patients,
        SOURCE,
        "Remove the patient's images from one split folder, or pass cross_split_patients='drop_train' to keep "
        "only its most held-out split's images",
    )
    records = [r for r in records if r.patient_id not in keep or r.split == keep[r.patient_id]]
    logger.info("%s: %d images of %d patients under %s", SOURCE, len(records), len(patient_splits), base)
    return records
