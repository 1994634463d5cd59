import math

import numpy as np
import pytest
import torch

from mtmedformer.metrics import segmentation_scores, summarize_segmentation

SIZE = 8
DIAGONAL = math.hypot(SIZE - 1, SIZE - 1)


def _mask(*pixels: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    for rows, cols in pixels:
        mask[rows, cols] = True
    return mask


# (prediction, ground truth, dice, iou, hd95) -- hand-worked
CASES = {
    "shifted square": (_mask((slice(2, 4), slice(3, 5))), _mask((slice(2, 4), slice(2, 4))), 0.5, 1 / 3, 1.0),
    "perfect": (_mask((slice(1, 5), slice(1, 3))), _mask((slice(1, 5), slice(1, 3))), 1.0, 1.0, 0.0),
    "3-4-5 apart": (_mask((slice(3, 4), slice(4, 5))), _mask((slice(0, 1), slice(0, 1))), 0.0, 0.0, 5.0),
    "both empty": (_mask(), _mask(), 1.0, 1.0, 0.0),
    "false positive on empty truth": (_mask((slice(0, 2), slice(0, 2))), _mask(), 0.0, 0.0, DIAGONAL),
    "missed lesion": (_mask(), _mask((slice(0, 2), slice(0, 2))), 0.0, 0.0, DIAGONAL),
}


@pytest.mark.parametrize("case", list(CASES))
def test_per_image_scores_hand_worked(case):
    # Prepare
    pred, target, dice, iou, hd95 = CASES[case]
    # Execute
    scores = segmentation_scores(pred[None], target[None])
    # Assert
    assert scores["dice"][0] == pytest.approx(dice)
    assert scores["iou"][0] == pytest.approx(iou)
    assert scores["hd95"][0] == pytest.approx(hd95)
    assert scores["has_lesion"][0] == bool(target.any())


@pytest.mark.parametrize("as_torch", [False, True])
def test_batched_scores_match_single_images_and_accept_channel_dim(as_torch):
    # Prepare
    names = list(CASES)
    pred = np.stack([CASES[n][0] for n in names])[:, None].astype(np.uint8)  # (N, 1, H, W) in {0, 1}
    target = np.stack([CASES[n][1] for n in names])[:, None].astype(np.uint8)
    if as_torch:
        pred, target = torch.from_numpy(pred), torch.from_numpy(target)
    # Execute
    scores = segmentation_scores(pred, target)
    # Assert
    np.testing.assert_allclose(scores["dice"], [CASES[n][2] for n in names])
    np.testing.assert_allclose(scores["iou"], [CASES[n][3] for n in names])
    np.testing.assert_allclose(scores["hd95"], [CASES[n][4] for n in names])
    assert np.isfinite(scores["hd95"]).all()


def test_summary_over_all_and_lesion_images():
    # Prepare: two lesion images (dice 0.5 and 0) and two lesion-free ones (dice 1 and 0)
    names = ["shifted square", "missed lesion", "both empty", "false positive on empty truth"]
    scores = segmentation_scores(np.stack([CASES[n][0] for n in names]), np.stack([CASES[n][1] for n in names]))
    # Execute
    summary = summarize_segmentation(scores)
    # Assert
    assert summary["n"] == 4
    assert summary["n_lesion"] == 2
    assert summary["dice"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert summary["dice_lesion"] == pytest.approx(0.25)
    assert summary["iou_lesion"] == pytest.approx((1 / 3) / 2)
    assert summary["hd95"] == pytest.approx((1.0 + DIAGONAL + 0.0 + DIAGONAL) / 4)
    assert summary["hd95_lesion"] == pytest.approx((1.0 + DIAGONAL) / 2)


def test_summary_without_lesions_or_images_uses_none():
    # Prepare
    no_lesion = segmentation_scores(np.zeros((2, SIZE, SIZE), bool), np.zeros((2, SIZE, SIZE), bool))
    nothing = {k: np.zeros(0) for k in ("dice", "iou", "hd95", "has_lesion")}
    # Execute
    summary, empty = summarize_segmentation(no_lesion), summarize_segmentation(nothing)
    # Assert
    assert summary["dice"] == 1.0 and summary["hd95"] == 0.0
    assert summary["dice_lesion"] is None and summary["hd95_lesion"] is None
    assert empty["n"] == 0 and empty["dice"] is None


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.zeros((1, SIZE, SIZE)), np.zeros((1, SIZE, SIZE + 1)), "shapes differ"),
        (np.full((1, SIZE, SIZE), 0.7), np.zeros((1, SIZE, SIZE)), "binary"),
        (np.zeros((SIZE, SIZE)), np.zeros((SIZE, SIZE)), r"\(N, H, W\)"),
    ],
)
def test_bad_inputs_raise(pred, target, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        segmentation_scores(pred, target)
