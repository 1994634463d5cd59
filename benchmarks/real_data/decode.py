"""Decode every image and mask of a set of records once, so a corrupt file fails before training does.

:func:`~mtmedformer.data.manifest.read_manifest` and the native loaders read only file headers; this pass
reads the pixels with the same functions the dataset uses (:func:`~mtmedformer.data.image_io.read_image`,
:func:`~mtmedformer.data.image_io.read_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mtmedformer.data.image_io import read_image, read_mask
from mtmedformer.data.records import Record
from mtmedformer.errors import DataError


@dataclass
class DecodeReport:
    """What :func:`decode_all` read.

    Attributes
    ----------
    images, masks
        Files decoded.
    shapes
        ``(H, W)`` -> number of images of that size.
    failures
        One message per file that could not be decoded (empty when all decoded).
    """

    images: int = 0
    masks: int = 0
    shapes: dict[tuple[int, int], int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def decode_all(records: Sequence[Record]) -> DecodeReport:
    """Read the pixels of every image and mask of ``records``; collect failures instead of stopping.

    A mask whose size differs from its image counts as a failure.
    """
    report = DecodeReport()
    for record in records:
        try:
            image = read_image(record.image)
        except DataError as exc:
            report.failures.append(str(exc))
            continue
        report.images += 1
        shape = (int(image.shape[0]), int(image.shape[1]))
        report.shapes[shape] = report.shapes.get(shape, 0) + 1
        for mask in record.masks or ():
            try:
                read_mask(mask, shape)
            except DataError as exc:
                report.failures.append(str(exc))
                continue
            report.masks += 1
    return report
