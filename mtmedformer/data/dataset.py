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
from mtmedformer.data.image_io import percentile_window, read_image, read_mask
from mtmedformer.data.records import Record
from mtmedformer.data.transforms import build_transforms
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

    def _load(self, record: Record) -> dict[str, Any]:
        """Read one record at source resolution: image (H, W) in [0, 1], mask (H, W) bool, boxes (N, 4)."""
        try:
            image = percentile_window(read_image(record.image), *self.window)
            mask = np.zeros(image.shape, dtype=bool)
            for path in record.masks or ():
                mask |= read_mask(path, image.shape)
        except DataError as exc:
            raise DataError(exc.reason, origin=record.origin or None, path=exc.path) from None
        if record.boxes_from_mask and record.masks is not None:
            boxes = boxes_from_mask(mask)
        else:
            boxes = np.asarray(record.boxes or (), dtype=np.float32).reshape(-1, 4)
            for box in boxes:
                problem = box_problem(box.tolist(), image.shape)
                if problem:
                    raise DataError(problem, origin=record.origin or None, path=record.image)
        return {IMAGE: image, MASK: mask, BOXES: boxes}

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Return sample ``index`` as a dict (see :mod:`mtmedformer.data.batch`).

        Raises
        ------
        DataError
            If an image or mask cannot be decoded, a mask's size differs from its image, or a box lies outside
            the image; the message names the record's origin and the file.
        """
        record = self.records[index]
        loaded = self._load(record)
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
