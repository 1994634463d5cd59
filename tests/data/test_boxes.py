import math

import numpy as np
import pytest
import torch

from mtmedformer.data.boxes import box_problem, boxes_from_mask, swap_xy


def _mask(shape, *pixels_or_slices):
    mask = np.zeros(shape, dtype=bool)
    for index in pixels_or_slices:
        mask[index] = True
    return mask


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (_mask((8, 10)), np.zeros((0, 4))),
        # one pixel at row 2, column 5 -> (x0, y0, x1, y1) = (5, 2, 6, 3) in pixel-edge coordinates
        (_mask((8, 10), (2, 5)), [[5, 2, 6, 3]]),
        (_mask((8, 10), (slice(0, 8), slice(0, 10))), [[0, 0, 10, 8]]),
        # a 2x3 block (rows 1-2, columns 6-8) and a separate pixel (row 6, column 0)
        (_mask((8, 10), (slice(1, 3), slice(6, 9)), (6, 0)), [[6, 1, 9, 3], [0, 6, 1, 7]]),
        # diagonal neighbours are one component under 8-connectivity
        (_mask((8, 10), (3, 3), (4, 4)), [[3, 3, 5, 5]]),
    ],
)
def test_boxes_from_mask_gives_pixel_edge_boxes_per_component(mask, expected):
    # Execute
    boxes = boxes_from_mask(mask)

    # Assert
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, np.asarray(expected, dtype=np.float32).reshape(-1, 4))


def test_boxes_from_mask_rejects_non_2d():
    with pytest.raises(ValueError, match="2D"):
        boxes_from_mask(np.zeros((1, 4, 4)))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_swap_xy_swaps_axes_and_is_its_own_inverse(as_tensor):
    # Prepare
    boxes = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], dtype=np.float32)
    if as_tensor:
        boxes = torch.from_numpy(boxes)

    # Execute
    swapped = swap_xy(boxes)

    # Assert
    np.testing.assert_array_equal(np.asarray(swapped), [[2, 1, 4, 3], [6, 5, 8, 7]])
    np.testing.assert_array_equal(np.asarray(swap_xy(swapped)), np.asarray(boxes))


@pytest.mark.parametrize(
    ("box", "problem"),
    [
        ((0, 0, 30, 20), None),  # touches the right and bottom borders: valid (pixel-edge convention)
        ((5, 5, 6, 6), None),
        ((5, 5, 5, 9), "x1 <= x0"),
        ((5, 9, 8, 3), "x1 <= x0 or y1 <= y0"),
        ((-1, 0, 4, 4), "outside the 30x20"),
        ((0, 0, 31, 4), "outside"),
        ((0, 0, 4, 21), "outside"),
        ((0, 0, math.nan, 4), "NaN or infinite"),
        ((0, 0, math.inf, 4), "NaN or infinite"),
        ((0, 0, 4), "has 3 values"),
    ],
)
def test_box_problem_names_what_is_wrong(box, problem):
    # Execute
    found = box_problem(box, (20, 30))

    # Assert
    if problem is None:
        assert found is None
    else:
        assert problem in found
