"""Data section of the experiment config: where images come from and how they are prepared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mtmedformer.config.loader import FieldError, reject_non_finite
from mtmedformer.data.image_io import DEFAULT_MAX_IMAGE_PIXELS

DataSource = Literal["manifest", "cbis_ddsm", "rsna", "kermany", "synthetic"]
Modality = Literal["mammography", "chest_xray"]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise FieldError(name, f"must be > 0, got {value}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the deterministic synthetic generator (``data.source: synthetic``).

    Every field except ``cache_dir`` is part of the generated set's identity: change one and a new set
    is generated (and cached) on first use.
    """

    modality: Modality = "mammography"  # which kind of image the generator draws
    num_sites: int = 3  # hospitals, each with its own acquisition look and prevalence
    images_per_site: int = 120  # images written per site
    image_size: int = 128  # side of the square images written to disk, pixels
    seed: int = 0  # the generator's seed (>= 0): same settings, same files
    cache_dir: str | None = None  # where generated sets are cached; None = $MTMEDFORMER_CACHE or ~/.cache/mtmedformer
    lesion_free_fraction: float = 0.2  # mammography only: share of patients without a mass (label left empty)
    label_withheld_fraction: float = 0.0  # share of images whose class label is left empty (not annotated)
    mask_withheld_fraction: float = 0.0  # mammography only: share of images whose mask is left empty
    boxes_withheld_fraction: float = 0.0  # share of images whose boxes are left empty (not annotated)
    val_fraction: float = 0.15  # share of each site's patients written with split "val"
    test_fraction: float = 0.15  # share of each site's patients written with split "test"
    sixteen_bit: bool = True  # the second site writes 16-bit PNGs (12-bit detector values) instead of 8-bit
    lesion_conspicuity: float = 1.0  # multiplies lesion contrast (masses, opacities): > 1 easier, < 1 harder

    def __post_init__(self) -> None:
        reject_non_finite(self)
        _positive("num_sites", self.num_sites)
        _positive("images_per_site", self.images_per_site)
        _positive("lesion_conspicuity", self.lesion_conspicuity)
        if self.image_size < 32:
            raise FieldError("image_size", f"must be at least 32 pixels, got {self.image_size}")
        if self.seed < 0:
            raise FieldError("seed", f"must be >= 0 (it seeds numpy's SeedSequence), got {self.seed}")
        for name in (
            "lesion_free_fraction",
            "label_withheld_fraction",
            "mask_withheld_fraction",
            "boxes_withheld_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FieldError(name, f"must be in [0, 1], got {value}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise FieldError(name, f"must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise FieldError("val_fraction", "val_fraction + test_fraction must leave a training split (< 1)")


@dataclass(frozen=True)
class NativeLayoutConfig:
    """Options of the native public-dataset loaders (``source: cbis_ddsm | rsna | kermany``)."""

    abnormality: Literal["mass", "calc", "both"] = "both"  # CBIS-DDSM: which case-description CSVs to read
    keep_official_val: bool = False  # Kermany: keep the 16-image official val split instead of re-splitting
    cross_split_patients: Literal["error", "drop_train"] = "error"  # a patient in two official splits


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared."""

    source: DataSource = "synthetic"  # manifest CSV, a native public layout, or the synthetic generator
    path: str | None = None  # manifest CSV file, or the data set's root folder for native layouts
    classes: tuple[str, ...] = ("benign", "malignant")  # class names; the index is the class id
    image_size: int = 128  # images (and masks, boxes) are resized to image_size x image_size pixels
    val_fraction: float = 0.15  # patient-level fraction for validation when the source gives no split
    test_fraction: float = 0.15  # patient-level fraction for test when the source gives no split
    split_seed: int = 0  # seed of the patient-level split
    # skip = drop bad rows (also files that do not decode: at check-data, and in training, where such an item is
    # replaced by the next loadable one with a warning), count them in one warning
    on_bad_row: Literal["error", "skip"] = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images (H * W) are refused from their header
    window_percentiles: tuple[float, float] = (0.5, 99.5)  # intensity window mapped to [0, 1]
    augment: bool = True  # random flips/rotations/intensity changes on the training split
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    native: NativeLayoutConfig = field(default_factory=NativeLayoutConfig)

    def __post_init__(self) -> None:
        reject_non_finite(self)
        if self.source != "synthetic" and not self.path:
            raise FieldError("path", f"is required when source is '{self.source}': give the manifest CSV or data root")
        if len(self.classes) < 2:
            raise FieldError("classes", f"needs at least two class names, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise FieldError("classes", f"has duplicate names: {list(self.classes)}")
        if self.image_size < 32:
            raise FieldError("image_size", f"must be at least 32 pixels, got {self.image_size}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise FieldError(name, f"must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise FieldError("val_fraction", "val_fraction + test_fraction must leave a training split (< 1)")
        low, high = self.window_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise FieldError("window_percentiles", f"needs 0 <= low < high <= 100, got {[low, high]}")
        if self.num_workers < 0:
            raise FieldError("num_workers", f"must be >= 0, got {self.num_workers}")
        if self.max_image_pixels < self.image_size**2:
            raise FieldError(
                "max_image_pixels",
                f"must be >= image_size^2 = {self.image_size**2} (images are resized to that), got "
                f"{self.max_image_pixels}",
            )
