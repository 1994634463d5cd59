import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from mtmedformer.data.boxes import boxes_from_mask
from mtmedformer.data.transforms import DropEmptyBoxesd, ResizeLongestPadd, build_transforms


def _sample(height, width, rect):
    """A dark image with one bright rectangle ``rect = (x0, y0, x1, y1)``, its mask and its box."""
    x0, y0, x1, y1 = rect
    image = torch.zeros(1, height, width)
    image[0, y0:y1, x0:x1] = 1.0
    return {
        "image": image,
        "mask": (image > 0).float(),
        "boxes": torch.tensor([rect], dtype=torch.float32),
        "label": 1,
        "has_boxes": True,
    }


def _bbox(array_2d, threshold=0.5):
    return boxes_from_mask(np.asarray(array_2d) > threshold)


@pytest.mark.parametrize(
    ("height", "width", "rect", "size", "expected"),
    [
        # 30 rows x 50 columns -> scale 0.8 -> 24 x 40, padded with 8 rows above: y' = 0.8 y + 8, x' = 0.8 x
        (30, 50, (30, 5, 45, 15), 40, (24.0, 12.0, 36.0, 20.0)),
        # 50 rows x 30 columns -> 40 x 24, padded with 8 columns on the left: x' = 0.8 x + 8, y' = 0.8 y
        (50, 30, (5, 30, 15, 45), 40, (12.0, 24.0, 20.0, 36.0)),
        # enlarging: 16 x 32 -> 32 x 64, padded with 16 rows above
        (16, 32, (20, 2, 28, 6), 64, (40.0, 20.0, 56.0, 28.0)),
    ],
)
def test_eval_transform_resizes_pads_and_moves_the_box_exactly(height, width, rect, size, expected):
    # Prepare: non-square image, off-centre box
    sample = _sample(height, width, rect)

    # Execute
    out = build_transforms(size, train=False, seed=0)(sample)

    # Assert
    assert out["image"].shape == out["mask"].shape == (1, size, size)
    torch.testing.assert_close(out["boxes"], torch.tensor([expected]))
    np.testing.assert_array_equal(_bbox(out["mask"][0]), [expected])
    np.testing.assert_array_equal(_bbox(out["image"][0]), [expected])
    assert out["label"] == 1 and out["has_boxes"] is True  # other keys pass through


@pytest.mark.parametrize(("height", "width", "rect"), [(30, 50, (31, 4, 45, 13)), (48, 20, (2, 30, 9, 41))])
def test_random_augmentation_keeps_image_mask_and_boxes_consistent(height, width, rect):
    # Prepare
    size = 40
    seen_boxes = set()

    for seed in range(40):
        # Execute
        out = build_transforms(size, train=True, seed=seed)(_sample(height, width, rect))

        # Assert: the box bounds the mask and the bright region, to within the one pixel resizing can move an edge
        (box,) = out["boxes"].numpy()
        np.testing.assert_allclose(_bbox(out["mask"][0])[0], box, atol=1.0)
        np.testing.assert_allclose(_bbox(out["image"][0])[0], box, atol=1.0)
        assert set(np.unique(out["mask"].numpy())) <= {0.0, 1.0}
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        seen_boxes.add(tuple(np.round(box, 2)))
    assert len(seen_boxes) >= 4  # flips and rotations really happen


def test_training_transform_is_deterministic_given_the_seed():
    # Prepare
    sample = _sample(30, 50, (30, 5, 45, 15))

    # Execute
    runs = [build_transforms(32, train=True, seed=seed)(dict(sample)) for seed in (11, 11, 12, 13, 14)]

    # Assert
    for key in ("image", "mask", "boxes"):
        torch.testing.assert_close(runs[0][key], runs[1][key])
    assert any(not torch.equal(runs[0]["image"], other["image"]) for other in runs[2:])


@pytest.mark.parametrize("train", [False, True])
def test_output_is_plain_float32_tensors_and_empty_boxes_stay_empty(train):
    # Prepare: an annotated-negative sample
    sample = {"image": torch.rand(1, 20, 30), "mask": torch.zeros(1, 20, 30), "boxes": torch.zeros(0, 4)}

    # Execute
    out = build_transforms(32, train=train, seed=0)(sample)

    # Assert
    for key, shape in (("image", (1, 32, 32)), ("mask", (1, 32, 32)), ("boxes", (0, 4))):
        assert type(out[key]) is torch.Tensor and not isinstance(out[key], MetaTensor)
        assert out[key].dtype == torch.float32 and tuple(out[key].shape) == shape


def test_drop_empty_boxes_removes_zero_area_boxes_only():
    # Prepare: MONAI order; the second box has zero height, the third is thinner than a pixel but real
    boxes = torch.tensor([[1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 2.0, 5.0], [3.0, 3.0, 3.5, 3.2]])

    # Execute
    out = DropEmptyBoxesd("boxes")({"boxes": boxes})

    # Assert
    torch.testing.assert_close(out["boxes"], boxes[[0, 2]])


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_image_size_is_rejected(size):
    with pytest.raises(ValueError, match="image_size"):
        build_transforms(size, train=False)


def test_resize_longest_pad_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        ResizeLongestPadd(0)
