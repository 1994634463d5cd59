import numpy as np
import pytest
import torch

from mtmedformer.metrics import RSNA_THRESHOLDS, average_precision, detection_metrics, rsna_image_score, rsna_score

GT_A = [0.0, 0.0, 10.0, 10.0]
GT_B = [20.0, 20.0, 30.0, 30.0]
FAR = [40.0, 40.0, 50.0, 50.0]


def _det(boxes: list[list[float]], scores: list[float]) -> dict:
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4), "scores": np.asarray(scores)}


def _gt(*boxes: list[float]) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def test_rsna_thresholds():
    assert RSNA_THRESHOLDS == (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


@pytest.mark.parametrize(
    ("detections", "ground_truths", "expected"),
    [
        # perfect: every box found, nothing else
        ([_det([GT_A], [0.9]), _det([GT_B], [0.8])], [_gt(GT_A), _gt(GT_B)], 1.0),
        # one false positive ranked before the only true positive: precision 1/2 at recall 1
        ([_det([FAR, GT_A], [0.9, 0.8])], [_gt(GT_A)], 0.5),
        # a missed ground-truth box: recall stops at 1/2 with precision 1
        ([_det([GT_A], [0.9]), _det([], [])], [_gt(GT_A), _gt(GT_B)], 0.5),
        # TP 0.9, FP 0.8 (on an annotated-negative image), TP 0.7: precision envelope 1 on [0, 1/2], 2/3 on
        # (1/2, 1] -> 1/2 * 1 + 1/2 * 2/3
        ([_det([GT_A], [0.9]), _det([FAR], [0.8]), _det([GT_B], [0.7])], [_gt(GT_A), _gt(), _gt(GT_B)], 5 / 6),
        # ground truth but no detection at all
        ([_det([], []), _det([], [])], [_gt(GT_A), _gt()], 0.0),
        # a duplicate detection of a matched box is a false positive (after the TP here: AP stays 1)
        ([_det([GT_A, GT_A], [0.9, 0.5])], [_gt(GT_A)], 1.0),
        # IoU exactly 0.5 is a hit (inclusive threshold): [5, 0, 15, 10] vs [0, 0, 10, 10] overlap 50 / 150 = 1/3
        # is a miss, [0, 0, 10, 20] vs [0, 0, 10, 10] overlap 100 / 200 = 0.5 is a hit
        ([_det([[5.0, 0.0, 15.0, 10.0]], [0.9])], [_gt(GT_A)], 0.0),
        ([_det([[0.0, 0.0, 10.0, 20.0]], [0.9])], [_gt(GT_A)], 1.0),
    ],
)
def test_average_precision_hand_worked(detections, ground_truths, expected):
    # Execute
    value = average_precision(detections, ground_truths, iou_threshold=0.5)
    # Assert
    assert value == pytest.approx(expected)


def test_average_precision_without_any_ground_truth_is_none():
    # Execute / Assert
    assert average_precision([_det([FAR], [0.9]), _det([], [])], [_gt(), _gt()]) is None


def test_average_precision_accepts_torch():
    # Prepare
    detections = [{"boxes": torch.tensor([GT_A]), "scores": torch.tensor([0.7])}]
    # Execute / Assert
    assert average_precision(detections, [torch.tensor([GT_A])]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("boxes", "scores", "ground_truth", "expected"),
    [
        # IoU 1: a hit at all 8 thresholds
        ([GT_A], [0.9], [GT_A], 1.0),
        # IoU 0.62 ([3.8, 0, 10, 10] vs GT_A): hit at 0.40 ... 0.60 (5 thresholds), miss (FP + FN) at 0.65+
        ([[3.8, 0.0, 10.0, 10.0]], [0.9], [GT_A], 5 / 8),
        # a hit plus a false positive: TP / (TP + FP) = 1/2 at every threshold
        ([GT_A, FAR], [0.9, 0.5], [GT_A], 0.5),
        # one of two boxes found: 1 / (1 + 0 + 1)
        ([GT_A], [0.9], [GT_A, GT_B], 0.5),
        # no ground truth but a prediction: 0 (counted)
        ([FAR], [0.9], [], 0.0),
        # ground truth but no prediction: 0
        ([], [], [GT_A], 0.0),
    ],
)
def test_rsna_image_score_hand_worked(boxes, scores, ground_truth, expected):
    # Execute
    value = rsna_image_score(
        np.asarray(boxes).reshape(-1, 4), np.asarray(scores), np.asarray(ground_truth).reshape(-1, 4)
    )
    # Assert
    assert value == pytest.approx(expected)


def test_rsna_matching_is_greedy_by_score_not_optimal():
    # Prepare (x intervals, all boxes 10 px tall): GT1 [0, 10], GT2 [4, 14]; P1 [1, 12] (score 0.9) has IoU 0.75
    # with GT1 and 8/13 with GT2; P2 [0, 9] (score 0.1) has IoU 0.9 with GT1 and 5/14 with GT2
    ground_truth = _gt([0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0])
    boxes = np.array([[1.0, 0.0, 12.0, 10.0], [0.0, 0.0, 9.0, 10.0]])
    # Execute
    value = rsna_image_score(boxes, np.array([0.9, 0.1]), ground_truth)
    # Assert: P1 goes first and takes GT1 (its best), leaving P2 unmatched: TP 1, FP 1, FN 1 at every threshold
    # (an optimal assignment would score (5 * 1 + 3 * 1/3) / 8 = 0.75)
    assert value == pytest.approx(1 / 3)


def test_rsna_score_excludes_images_with_nothing():
    # Prepare: image 0 perfect, image 1 empty/empty (excluded), image 2 a false positive on a negative
    detections = [_det([GT_A], [0.9]), _det([], []), _det([FAR], [0.3])]
    # Execute
    value, counted = rsna_score(detections, [_gt(GT_A), _gt(), _gt()])
    # Assert
    assert counted == 2
    assert value == pytest.approx(0.5)


def test_rsna_score_counts_only_confident_detections_while_map_ranks_all():
    # Prepare: a hit at 0.9 and a far false positive at 0.3 on the same image
    detections = [_det([GT_A, FAR], [0.9, 0.3])]
    ground_truths = [_gt(GT_A)]
    # Execute
    everything, _ = rsna_score(detections, ground_truths)
    confident, counted = rsna_score(detections, ground_truths, min_score=0.5)
    values, _ = detection_metrics(detections, ground_truths)
    # Assert: TP / (TP + FP + FN) = 1/2 with the low-score box, 1 without it
    assert everything == pytest.approx(0.5) and confident == pytest.approx(1.0) and counted == 1
    assert values["map_rsna"] == pytest.approx(1.0) and values["map50"] == pytest.approx(1.0)


def test_an_image_whose_detections_are_all_below_the_cutoff_is_excluded_when_it_has_no_ground_truth():
    # Execute
    value, counted = rsna_score([_det([FAR], [0.2]), _det([GT_A], [0.9])], [_gt(), _gt(GT_A)], min_score=0.5)
    # Assert
    assert counted == 1 and value == pytest.approx(1.0)


def test_set_without_ground_truth_gives_defined_values_and_notes():
    # Prepare
    nothing = [_det([], []), _det([], [])]
    only_fp = [_det([FAR], [0.9]), _det([], [])]
    # Execute
    empty_values, empty_notes = detection_metrics(nothing, [_gt(), _gt()])
    fp_values, fp_notes = detection_metrics(only_fp, [_gt(), _gt()])
    # Assert
    assert empty_values == {"n": 2, "n_boxes": 0, "map50": None, "map_rsna": None, "n_rsna": 0}
    assert len(empty_notes) == 2
    assert fp_values == {"n": 2, "n_boxes": 0, "map50": None, "map_rsna": 0.0, "n_rsna": 1}
    assert len(fp_notes) == 1 and "map50" in fp_notes[0]


@pytest.mark.parametrize(
    ("detections", "ground_truths", "match"),
    [
        ([_det([GT_A], [0.9])], [], "1 images but ground truth for 0"),
        ([{"boxes": np.zeros((2, 4)), "scores": np.zeros(1)}], [_gt()], "2 boxes but 1 scores"),
        ([_det([GT_A], [0.9])], [np.zeros((1, 3))], r"\(N, 4\)"),
    ],
)
def test_bad_inputs_raise(detections, ground_truths, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        average_precision(detections, ground_truths)
