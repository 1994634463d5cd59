"""Builders of tiny data sets in the public data sets' own layouts (CBIS-DDSM, RSNA, Kermany), in tmp_path."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

_counter = itertools.count(10000)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    rescale: tuple[float, float] | None = None,
) -> Path:
    """Write a single-frame uint8/uint16 DICOM; ``rescale`` = (slope, intercept) adds those tags."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def flat_pixels(shape: tuple[int, int], value: int = 7, dtype: type = np.uint16) -> np.ndarray:
    """A constant image of ``shape``."""
    return np.full(shape, value, dtype)


def _grey(shape: tuple[int, int], seed: int, dtype: type = np.uint16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = 255 if dtype == np.uint8 else 4095
    return rng.integers(1, high, size=shape).astype(dtype)


def _uid_path(subject: str, name: str) -> str:
    # CSV paths name UID folders the NBIA download does not have.
    return f"{subject}/1.3.6.1.4.1.9590.100.1.2.{next(_counter)}/1.3.6.1.4.1.9590.100.1.2.{next(_counter)}/{name}"


# ---------------------------------------------------------------------------------------------- CBIS-DDSM


@dataclass
class CbisLesion:
    """One abnormality row: its ROI mask is a rectangle ``(r0, c0, r1, c1)`` of the full image."""

    abnormality_id: int = 1
    pathology: str = "MALIGNANT"
    rect: tuple[int, int, int, int] = (4, 4, 12, 12)
    mask_first: bool = True  # mask is 1-1.dcm and the crop 1-2.dcm; False swaps the file order
    crop_shape: tuple[int, int] | None = (10, 8)  # None = the crop has the full image's size
    separate_series: bool = False  # mask and crop in two series folders, as in parts of the TCIA download


@dataclass
class CbisImage:
    """One full mammogram with its abnormality rows."""

    patient: str = "P_00001"
    kind: str = "Mass"  # "Mass" or "Calc"
    split: str = "Training"  # "Training" or "Test"
    side: str = "LEFT"
    view: str = "CC"
    shape: tuple[int, int] = (48, 40)
    lesions: list[CbisLesion] = field(default_factory=lambda: [CbisLesion()])
    photometric: str = "MONOCHROME2"
    rescale: tuple[float, float] | None = None

    @property
    def subject(self) -> str:
        return f"{self.kind}-{self.split}_{self.patient}_{self.side}_{self.view}"

    @property
    def csv_name(self) -> str:
        part = "train" if self.split == "Training" else "test"
        return f"{self.kind.lower()}_case_description_{part}_set.csv"


MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
]  # fmt: skip
CALC_HEADER = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "calc type", "calc distribution", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
]  # fmt: skip
CBIS_CSVS = [f"{k}_case_description_{p}_set.csv" for k in ("mass", "calc") for p in ("train", "test")]


def cbis_csv_rows(image: CbisImage) -> list[list[str]]:
    """The CSV rows TCIA publishes for ``image``, UID paths and stray newlines included."""
    rows = []
    full = _uid_path(image.subject, "000000.dcm")
    for lesion in image.lesions:
        roi_subject = f"{image.subject}_{lesion.abnormality_id}"
        kind = "mass" if image.kind == "Mass" else "calcification"
        rows.append(
            [
                image.patient, "3", image.side, image.view, str(lesion.abnormality_id), kind,
                "OVAL", "CIRCUMSCRIBED", "4", lesion.pathology, "3", full,
                _uid_path(roi_subject, "000000.dcm"), _uid_path(roi_subject, "000001.dcm") + "\n",
            ]
        )  # fmt: skip
    return rows


def write_cbis_image(base: Path, image: CbisImage, seed: int = 0) -> dict[str, Path]:
    """Write the NBIA-download DICOMs of ``image`` under ``base``; return {"full": path, "mask<id>": path, ...}."""
    written = {}
    series = base / image.subject / "07-20-2016-DDSM-74994" / "1.000000-full mammogram images-24515"
    written["full"] = write_dicom(
        series / "1-1.dcm", _grey(image.shape, seed), photometric=image.photometric, rescale=image.rescale
    )
    for lesion in image.lesions:
        study = base / f"{image.subject}_{lesion.abnormality_id}" / "08-29-2017-DDSM-96628"
        mask = np.zeros(image.shape, np.uint8)
        r0, c0, r1, c1 = lesion.rect
        mask[r0:r1, c0:c1] = 255
        crop = _grey(lesion.crop_shape or image.shape, seed + lesion.abnormality_id, np.uint8)
        names = ("1-1.dcm", "1-2.dcm") if lesion.mask_first else ("1-2.dcm", "1-1.dcm")
        mask_dir = study / "1.000000-ROI mask images-26184"
        crop_dir = study / "1.000000-cropped images-26184" if lesion.separate_series else mask_dir
        written[f"mask{lesion.abnormality_id}"] = write_dicom(mask_dir / names[0], mask)
        written[f"crop{lesion.abnormality_id}"] = write_dicom(crop_dir / names[1], crop)
    return written


def build_cbis(
    root: Path,
    images: Sequence[CbisImage],
    *,
    under_cbis_folder: bool = True,
    csvs: Iterable[str] = CBIS_CSVS,
) -> dict[str, dict[str, Path]]:
    """Write a CBIS-DDSM download with the given images; return the written files per Subject."""
    base = root / "CBIS-DDSM" if under_cbis_folder else root
    rows: dict[str, list[list[str]]] = {name: [] for name in csvs}
    written = {}
    for seed, image in enumerate(images):
        written[image.subject] = write_cbis_image(base, image, seed)
        rows.setdefault(image.csv_name, []).extend(cbis_csv_rows(image))
    for name in csvs:
        write_csv(root / name, MASS_HEADER if name.startswith("mass") else CALC_HEADER, rows[name])
    return written


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


# ---------------------------------------------------------------------------------------------------- RSNA

RSNA_HEADER = ["patientId", "x", "y", "width", "height", "Target"]


def build_rsna(
    root: Path,
    label_rows: Iterable[Sequence[str]],
    images: Mapping[str, tuple[int, int]],
    class_rows: Iterable[Sequence[str]] | None = None,
) -> Path:
    """Write ``stage_2_train_labels.csv`` rows, one DICOM per ``images`` entry (patientId -> (rows, cols))."""
    write_csv(root / "stage_2_train_labels.csv", RSNA_HEADER, label_rows)
    (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    for seed, (patient, shape) in enumerate(images.items()):
        write_dicom(root / "stage_2_train_images" / f"{patient}.dcm", _grey(shape, seed), photometric="MONOCHROME1")
    if class_rows is not None:
        write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], class_rows)
    return root


# ------------------------------------------------------------------------------------------------- Kermany


def build_kermany(root: Path, files: Iterable[str], *, nested: bool = True) -> Path:
    """Write 8x8 JPEGs at ``chest_xray/<file>`` (or ``<file>`` when not nested); return the chest_xray folder."""
    base = root / "chest_xray" if nested else root
    for i, name in enumerate(files):
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), i % 255, np.uint8)).save(path, format="JPEG")
    return base
