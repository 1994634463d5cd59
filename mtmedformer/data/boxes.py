"""Lesion boxes: the coordinate convention, boxes from masks, and box checks.

Convention used everywhere in this library
------------------------------------------
A box is ``(x0, y0, x1, y1)`` in **pixel-edge** coordinates, ``x`` along columns and ``y`` along rows:
the box covers the pixels with ``x0 <= column < x1`` and ``y0 <= row < y1``. A single pixel at
``(row=r, column=c)`` is the box ``(c, r, c + 1, r + 1)``; a box spanning a whole ``H x W`` image is
``(0, 0, W, H)``. Under this convention resizing an image by a factor ``s`` multiplies box coordinates
by exactly ``s`` and flipping a width-``W`` image maps ``x`` to ``W - x``, which is also the convention
of MONAI's box utilities (``monai.data.box_utils.TO_REMOVE = 0``).

MONAI's detection transforms order box coordinates by *array axis* instead: for a ``(C, H, W)`` array
their 2D "xyxy" is ``(row0, col0, row1, col1)``. :func:`swap_xy` converts between the two orders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """Return one box per 8-connected lesion component of a binary mask.

    Parameters
    ----------
    mask
        ``(H, W)`` array; non-zero pixels are lesion.

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` float32 ``xyxy`` pixel-edge boxes (see the module docstring), ``N`` = number of
        components, ordered by :func:`scipy.ndimage.label`'s raster order; ``(0, 4)`` for an empty mask.

    Raises
    ------
    ValueError
        If ``mask`` is not 2D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"boxes_from_mask expects a 2D (H, W) mask, got shape {mask.shape}")
    labelled, count = ndimage.label(mask != 0, structure=_EIGHT_CONNECTED)
    boxes = np.zeros((count, 4), dtype=np.float32)
    for i, (rows, cols) in enumerate(ndimage.find_objects(labelled)):
        # slice stops are exclusive, which is exactly the pixel-edge x1 / y1.
        boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
    return boxes


def swap_xy(boxes: np.ndarray) -> np.ndarray:
    """Swap the two spatial axes of 2D boxes: ``(x0, y0, x1, y1)`` <-> ``(y0, x0, y1, x1)``.

    Converts this library's column-first boxes to MONAI's array-axis order and back (it is its own inverse).

    Parameters
    ----------
    boxes
        ``(N, 4)`` numpy array or torch tensor.

    Returns
    -------
    Same type as ``boxes``
        ``(N, 4)``, a new array.
    """
    return boxes[:, [1, 0, 3, 2]]


def box_problem(box: Sequence[float], shape: tuple[int, int]) -> str | None:
    """Say what is wrong with one box on an image of ``shape``, or return ``None`` when it is valid.

    A valid box has four finite coordinates with ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``
    (pixel-edge coordinates, so ``x1 == W`` touches the right border).

    Parameters
    ----------
    box
        ``(x0, y0, x1, y1)`` in pixels.
    shape
        ``(H, W)`` of the image.

    Returns
    -------
    str or None
        A sentence naming the problem and the fix, or ``None``.
    """
    height, width = shape
    if len(box) != 4:
        return f"box {list(box)} has {len(box)} values; write each box as [x0, y0, x1, y1]"
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return f"box {list(box)} has a NaN or infinite coordinate; give finite pixel coordinates"
    if x1 <= x0 or y1 <= y0:
        return (
            f"box {list(box)} has x1 <= x0 or y1 <= y0; write boxes as [x0, y0, x1, y1] with the top-left "
            "corner first and a non-zero width and height"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return (
            f"box {list(box)} lies outside the {width}x{height} (WxH) image; coordinates must satisfy "
            f"0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (pixels of this image, x = column)"
        )
    return None
