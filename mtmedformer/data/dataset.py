"""The one dataset class: loads :class:`~mtmedformer.data.records.Record` objects as sample dicts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mtmedformer import TASKS
from mtmedformer.data.batch import BOXES, HAS_BOXES, HAS_LABEL, HAS_MASK, IMAGE, LABEL, MASK
from mtmedformer.data.boxes import box_problem, boxes_from_mask
from mtmedformer.data.image_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    check_pixel_limit,
    percentile_window,
    read_image,
    read_mask,
    reduction_factor,
)
from mtmedformer.data.records import Record
from mtmedformer.data.transforms import build_transforms
from mtmedformer.data.validate import image_shape
from mtmedformer.errors import DataError

logger = logging.getLogger(__name__)

_SEED_MODULUS = 2**32  # MONAI random states take seeds in [0, 2**32)


class MedicalImageDataset(Dataset):
    """Load records as sample dicts (the format documented in :mod:`mtmedformer.data.batch`).

    Each item: the image is read (:func:`~mtmedformer.data.image_io.read_image`), windowed between two
    intensity percentiles to ``[0, 1]``, its masks OR-merged, its boxes taken from the record or, when
    ``record.boxes_from_mask``, from the connected components of the merged mask at source resolution;
    then all three are resized together to ``image_size x image_size``
    (:func:`~mtmedformer.data.transforms.build_transforms`) and, when ``train``, augmented.

    Augmentation is reseeded for every item from ``(seed, epoch, index)``, so a sample's augmentation does
    not depend on the number of DataLoader workers or the order items are drawn; call :meth:`set_epoch`
    at the start of each epoch to get new augmentations.

    Memory: an image above ``max_image_pixels`` is refused from its header; an image above
    :data:`~mtmedformer.data.image_io.REDUCE_ABOVE_PIXELS` is shrunk while it is decoded, by the integer factor
    of :func:`~mtmedformer.data.image_io.reduction_factor` (its masks alike, boxes scaled to match), since it is
    resized to ``image_size`` afterwards anyway.

    With ``skip_undecodable``, an item whose files cannot be decoded (or that breaks a check only decoding can
    make) is replaced by the next loadable record of the dataset, and a warning names the file once per
    process; ``mtmedformer check-data`` finds such files before training.

    Parameters
    ----------
    records
        The records to load.
    classes
        Class names; a record's label is turned into its index in this list.
    image_size
        Side of the square output images, pixels.
    train
        Whether to apply random augmentation (use it for the training split only).
    window
        ``(low, high)`` intensity percentiles mapped to 0 and 1, default ``(0.5, 99.5)``.
    seed
        Seed of the augmentation.
    max_image_pixels
        Largest accepted ``H * W`` of a source image (``data.max_image_pixels``).
    skip_undecodable
        Replace an undecodable item instead of raising (``data.on_bad_row: skip``).

    Raises
    ------
    ValueError
        If ``classes``, ``image_size`` or ``window`` is invalid.
    DataError
        If a record's label is not in ``classes`` (naming the record's origin).
    """

    def __init__(
        self,
        records: Sequence[Record],
        classes: Sequence[str],
        image_size: int,
        *,
        train: bool = False,
        window: tuple[float, float] = (0.5, 99.5),
        seed: int = 0,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        skip_undecodable: bool = False,
    ) -> None:
        classes = tuple(classes)
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be non-empty and unique, got {list(classes)}")
        low, high = window
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"window needs 0 <= low < high <= 100 (percentiles), got {list(window)}")
        self.records = list(records)
        self.classes = classes
        self.image_size = image_size
        self.train = train
        self.window = (float(low), float(high))
        self.seed = seed
        self.epoch = 0
        self.max_image_pixels = max_image_pixels
        self.skip_undecodable = skip_undecodable
        self.undecodable: set[int] = set()  # indices found undecodable in this process
        self._index = {name: i for i, name in enumerate(classes)}
        for record in self.records:
            if record.label is not None and record.label not in self._index:
                raise DataError(
                    f"label '{record.label}' is not one of the classes {list(classes)}",
                    origin=record.origin or None,
                    path=record.image,
                )
        self.transform = build_transforms(image_size, train=train, seed=seed)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentations of epoch ``epoch`` (no effect when ``train`` is false).

        Raises
        ------
        ValueError
            If ``epoch`` is negative.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def task_counts(self) -> dict[str, int]:
        """Return the number of samples annotated for each task, keyed by :data:`mtmedformer.TASKS`."""
        counts = {
            "classification": sum(r.has_label for r in self.records),
            "segmentation": sum(r.has_mask for r in self.records),
            "detection": sum(r.has_boxes for r in self.records),
        }
        return {task: counts[task] for task in TASKS}

    def label_counts(self) -> dict[str, int]:
        """Return the number of labelled samples per class name (every class present, possibly 0)."""
        counts = dict.fromkeys(self.classes, 0)
        for record in self.records:
            if record.label is not None:
                counts[record.label] += 1
        return counts

    def load_record(self, record: Record) -> dict[str, Any]:
        """Read one record at source resolution (or shrunk, see the class docstring), unaugmented.

        Returns
        -------
        dict
            ``image`` (H, W) float32 in [0, 1], ``mask`` (H, W) bool, ``boxes`` (N, 4) float32 in its pixels.

        Raises
        ------
        DataError
            If a file cannot be decoded or is too large, a mask's size differs from its image, or a box lies
            outside the image; the message names the record's origin and the file.
        """
        try:
            shape = image_shape(record.image)  # header only: decides the limit and the shrink factor
            check_pixel_limit(shape, self.max_image_pixels, record.image)
            factor = reduction_factor(shape, self.image_size)
            raw = read_image(record.image, max_pixels=self.max_image_pixels, reduce=factor)
            image = percentile_window(raw, *self.window)
            del raw
            mask = np.zeros(image.shape, dtype=bool)
            for path in record.masks or ():
                if factor > 1 and image_shape(path) != shape:  # shrunk sizes could agree where full ones do not
                    other = image_shape(path)
                    raise DataError(
                        f"mask is {other[1]}x{other[0]} (WxH) but its image is {shape[1]}x{shape[0]}; "
                        "masks must have exactly the image's size",
                        path=path,
                    )
                mask |= read_mask(path, image.shape, max_pixels=self.max_image_pixels, reduce=factor)
        except DataError as exc:
            raise DataError(exc.reason, origin=record.origin or None, path=exc.path) from None
        if record.boxes_from_mask and record.masks is not None:
            boxes = boxes_from_mask(mask)
        else:
            boxes = np.asarray(record.boxes or (), dtype=np.float32).reshape(-1, 4)
            for box in boxes:
                problem = box_problem(box.tolist(), shape)
                if problem:
                    raise DataError(problem, origin=record.origin or None, path=record.image)
            if factor > 1:  # pixel-edge coordinates scale exactly with the image (mtmedformer.data.boxes)
                scale = np.array([image.shape[1] / shape[1], image.shape[0] / shape[0]] * 2, dtype=np.float32)
                boxes = boxes * scale
        return {IMAGE: image, MASK: mask, BOXES: boxes}

    def _load_or_replace(self, index: int) -> tuple[Record, dict[str, Any]]:
        """Load item ``index``; with ``skip_undecodable``, the next loadable record when it fails."""
        n = len(self.records)
        first_error: DataError | None = None
        for step in range(n):
            j = (index + step) % n
            if j in self.undecodable:  # known bad in this process: not decoded again
                continue
            try:
                return self.records[j], self.load_record(self.records[j])
            except DataError as exc:
                if not self.skip_undecodable:
                    raise
                first_error = first_error or exc
                if j not in self.undecodable:
                    self.undecodable.add(j)
                    logger.warning("skipped (data.on_bad_row: skip): %s; the next loadable image is used", exc)
        example = f", e.g. {first_error}" if first_error is not None else ""
        raise DataError(f"none of the {n} images of this dataset can be loaded{example}; check the data with "
                        "mtmedformer check-data")

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return sample ``index`` as a dict (see :mod:`mtmedformer.data.batch`).

        Raises
        ------
        DataError
            If an image or mask cannot be decoded, a mask's size differs from its image, or a box lies outside
            the image (with ``skip_undecodable``: only when no record of the dataset loads); the message names
            the record's origin and the file.
        """
        record, loaded = self._load_or_replace(index)
        sample = {
            IMAGE: torch.from_numpy(loaded[IMAGE])[None],  # (1, H, W)
            MASK: torch.from_numpy(loaded[MASK].astype(np.float32))[None],  # (1, H, W)
            BOXES: torch.from_numpy(loaded[BOXES]),  # (N, 4) xyxy
        }
        if self.train:
            # Independent of worker count and draw order; distinct per (seed, epoch, index).
            item_seed = np.random.SeedSequence([self.seed % _SEED_MODULUS, self.epoch, index]).generate_state(1)[0]
            self.transform.set_random_state(seed=int(item_seed))
        sample = self.transform(sample)
        return {
            IMAGE: sample[IMAGE],
            MASK: sample[MASK],
            BOXES: sample[BOXES],
            LABEL: self._index[record.label] if record.label is not None else -1,
            HAS_LABEL: record.has_label,
            HAS_MASK: record.has_mask,
            HAS_BOXES: record.has_boxes,
        }
