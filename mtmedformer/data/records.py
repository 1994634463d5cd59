"""The sample schema shared by every data source: a :class:`Record` per image, before loading.

Every reader (the generic manifest CSV, the native CBIS-DDSM / RSNA / Kermany loaders, the synthetic
generator's manifests) produces ``Record`` objects; one dataset class turns them into tensors. That
keeps the distinction between *not annotated* and *annotated negative* in one place:

=================  ==================  ==========================================
task               not annotated       annotated negative
=================  ==================  ==========================================
classification     ``label is None``   (a class name, e.g. ``"benign"``)
segmentation       ``masks is None``   masks given, all pixels zero
detection          ``boxes is None``   ``boxes == ()`` (no lesion boxes)
=================  ==================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")

Box = tuple[float, float, float, float]
"""One box ``(x0, y0, x1, y1)`` in the source image's pixel coordinates, ``x1 > x0``, ``y1 > y0``."""


@dataclass(frozen=True)
class Record:
    """One image with whatever annotations it carries, as paths and plain values.

    Attributes
    ----------
    image
        Path of the image file (PNG, JPEG, 16-bit PNG, DICOM or 2D NIfTI).
    patient_id
        Patient identifier; no patient may appear in two splits.
    label
        Class name from the configured class list, or ``None`` when not annotated.
    masks
        Mask files (non-zero = lesion) OR-merged into one binary mask of the image's size; ``None``
        when segmentation is not annotated. An all-zero mask means "annotated, no lesion".
    boxes
        Lesion boxes ``(x0, y0, x1, y1)`` in pixels of the source image; ``()`` = annotated with no
        lesion, ``None`` = not annotated.
    boxes_from_mask
        When true, detection targets are the connected components of the merged mask (used by
        CBIS-DDSM, whose boxes are not published); ``boxes`` must then be ``None``.
    split
        ``"train"``, ``"val"``, ``"test"`` or ``None`` (assigned later by a seeded patient split).
    site
        Acquisition site / hospital, used for federated partitioning; ``None`` when unknown.
    origin
        Where the record came from, e.g. ``"manifest.csv row 3"``, for error messages.
    """

    image: Path
    patient_id: str
    label: str | None = None
    masks: tuple[Path, ...] | None = None
    boxes: tuple[Box, ...] | None = None
    boxes_from_mask: bool = False
    split: str | None = None
    site: str | None = None
    origin: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def has_label(self) -> bool:
        """Whether classification is annotated."""
        return self.label is not None

    @property
    def has_mask(self) -> bool:
        """Whether segmentation is annotated."""
        return self.masks is not None

    @property
    def has_boxes(self) -> bool:
        """Whether detection is annotated (explicit boxes or boxes derived from the mask)."""
        return self.boxes is not None or (self.boxes_from_mask and self.masks is not None)
