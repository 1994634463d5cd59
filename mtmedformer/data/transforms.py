"""MONAI dictionary transforms that keep image, mask and boxes consistent.

Every sample is resized so that its longest side is ``image_size`` (aspect ratio kept) and padded
symmetrically with zeros to ``image_size x image_size``; masks are resized nearest-neighbour so they stay
binary and boxes are scaled and shifted by exactly the same amounts. Training adds random flips along
both axes, random 90-degree rotations (exact for boxes, unlike small-angle rotations, which would turn
a tight box into a loose one), and contrast (gamma) and Gaussian-noise changes on the image only.

Boxes enter and leave as ``xyxy`` with ``x`` = column (see :mod:`mtmedformer.data.boxes`). MONAI's box
transforms order coordinates by array axis (first = rows), so the pipeline swaps the axes on entry and
back on exit; every step in between works in MONAI's order.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.apps.detection.transforms.box_ops import resize_boxes
from monai.apps.detection.transforms.dictionary import ClipBoxToImaged, RandFlipBoxd, RandRotateBox90d
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandGaussianNoised,
    Resize,
    SpatialPad,
)

from mtmedformer.data.batch import BOXES, IMAGE, MASK
from mtmedformer.data.boxes import swap_xy

FLIP_PROB = 0.5  # per axis
ROTATE90_PROB = 0.5  # then k in {1, 2, 3} quarter turns, uniformly
CONTRAST_PROB, CONTRAST_GAMMA = 0.5, (0.7, 1.5)  # intensity ** gamma within the image's own range
NOISE_PROB, NOISE_STD = 0.3, 0.02  # additive Gaussian noise, in units of the [0, 1] intensity range


class SwapBoxAxesd(MapTransform):
    """Swap box coordinates between ``xyxy`` (x = column) and MONAI's array-axis order; its own inverse.

    Also makes the boxes a float32 ``(N, 4)`` tensor, so an empty list of boxes becomes shape ``(0, 4)``.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # noqa: D102
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = torch.as_tensor(d[key], dtype=torch.float32).reshape(-1, 4)
            d[key] = swap_xy(boxes)
        return d


class ResizeLongestPadd(MapTransform):
    """Resize the longest side to ``size`` keeping the aspect ratio, then zero-pad to ``size x size``.

    The image is resized with area averaging when shrinking (anti-aliased) and bilinearly when enlarging;
    the mask with ``nearest-exact`` (pixel-centre sampling, so it stays binary and aligned). Boxes, in
    MONAI order, are scaled by the exact per-axis size ratio and shifted by the padding.

    Parameters
    ----------
    size
        Side of the output square, pixels.
    image_key, mask_key, box_key
        Keys of the ``(C, H, W)`` image, the ``(1, H, W)`` mask and the ``(N, 4)`` boxes; the mask and boxes
        must match the image's size.
    """

    def __init__(self, size: int, image_key: str = IMAGE, mask_key: str = MASK, box_key: str = BOXES) -> None:
        super().__init__((image_key, mask_key, box_key))
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.size = size
        self.image_key, self.mask_key, self.box_key = image_key, mask_key, box_key
        self.padder = SpatialPad((size, size), method="symmetric")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # noqa: D102
        d = dict(data)
        height, width = (int(n) for n in d[self.image_key].shape[1:])
        scale = self.size / max(height, width)
        new = (max(1, round(height * scale)), max(1, round(width * scale)))
        mode = "area" if new[0] <= height and new[1] <= width else "bilinear"
        d[self.image_key] = self.padder(Resize(new, mode=mode)(d[self.image_key]))
        d[self.mask_key] = self.padder(Resize(new, mode="nearest-exact")(d[self.mask_key]))
        boxes = resize_boxes(d[self.box_key], (height, width), new)
        # SpatialPad's "symmetric" method puts floor(missing / 2) pixels before the content.
        before = torch.tensor([(self.size - n) // 2 for n in new] * 2, dtype=boxes.dtype)
        d[self.box_key] = boxes + before
        return d


class DropEmptyBoxesd(MapTransform):
    """Drop boxes with zero width or height (e.g. clipped away at a border).

    MONAI's ``ClipBoxToImage(remove_empty=True)`` would also drop boxes narrower than one pixel, which after
    shrinking a large mammogram can be a real lesion; only truly empty boxes are dropped here.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # noqa: D102
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = d[key]
            d[key] = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        return d


class ClampIntensityd(MapTransform):
    """Clip intensities to ``[0, 1]`` (additive noise can leave that range)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # noqa: D102
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key].clamp(0.0, 1.0)
        return d


def build_transforms(image_size: int, *, train: bool, seed: int = 0) -> Compose:
    """Build the sample transform: resize/pad, plus random augmentation when ``train``.

    Parameters
    ----------
    image_size
        Side of the square output, pixels.
    train
        Add random flips, 90-degree rotations, contrast and noise (see the module constants).
    seed
        Seed of the random state (``Compose.set_random_state``); the same seed gives the same sequence of
        augmentations.

    Returns
    -------
    monai.transforms.Compose
        Maps a sample dict with ``image`` ``(1, H, W)`` float in ``[0, 1]``, ``mask`` ``(1, H, W)`` and ``boxes``
        ``(N, 4)`` ``xyxy`` pixels of that image to the same keys at ``image_size x image_size``, as plain
        float32 tensors. Boxes clipped to zero area by augmentation are dropped; other keys pass through.

    Raises
    ------
    ValueError
        If ``image_size`` is not a positive integer.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer number of pixels, got {image_size!r}")
    spatial = [IMAGE, MASK]
    steps: list[Any] = [SwapBoxAxesd(BOXES), ResizeLongestPadd(image_size)]
    if train:
        steps += [
            RandFlipBoxd(spatial, BOXES, IMAGE, prob=FLIP_PROB, spatial_axis=0),
            RandFlipBoxd(spatial, BOXES, IMAGE, prob=FLIP_PROB, spatial_axis=1),
            RandRotateBox90d(spatial, BOXES, IMAGE, prob=ROTATE90_PROB, max_k=3, spatial_axes=(0, 1)),
            RandAdjustContrastd(IMAGE, prob=CONTRAST_PROB, gamma=CONTRAST_GAMMA),
            RandGaussianNoised(IMAGE, prob=NOISE_PROB, std=NOISE_STD),
            ClampIntensityd(IMAGE),
        ]
    steps += [
        # A safety net for rounding at the borders.
        ClipBoxToImaged(box_keys=BOXES, label_keys=(), box_ref_image_keys=IMAGE, remove_empty=False),
        DropEmptyBoxesd(BOXES),
        SwapBoxAxesd(BOXES),
        EnsureTyped([IMAGE, MASK, BOXES], data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    transform = Compose(steps)
    transform.set_random_state(seed=seed)
    return transform
