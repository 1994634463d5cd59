import json
import math

import pytest
import torch

from mtmedformer.metrics import MultiTaskEvaluator
from tests.losses.helpers import make_batch

SIZE = 16
TASKS = ("classification", "segmentation", "detection")
LESION_BOX = [2.0, 2.0, 8.0, 8.0]
FAR_BOX = [10.0, 10.0, 15.0, 15.0]


def _logits_for(p1: list[float]) -> torch.Tensor:
    """(B, 2) logits whose softmax gives probability p1 to class 1."""
    p = torch.tensor(p1)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)


def _seg_logits(masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks > 0, 10.0, -10.0)


def _square(rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(1, SIZE, SIZE)
    mask[0, rows, cols] = 1.0
    return mask


def _two_batches():
    """Two batches with partial annotations; see the test for the hand-worked values."""
    lesion = _square(slice(2, 4), slice(2, 4))
    shifted = _square(slice(2, 4), slice(3, 5))  # Dice 0.5 against lesion
    empty = torch.zeros(1, SIZE, SIZE)
    # batch 1: s0 fully annotated (label 1, lesion, one box); s1 annotated for nothing
    batch1 = make_batch(
        torch.stack([lesion, lesion]),
        [1, -1],
        [True, False],
        boxes=[torch.tensor([LESION_BOX]), torch.zeros(0, 4)],
        has_boxes=[True, False],
    )
    outputs1 = {"classification": _logits_for([0.9, 0.1]), "segmentation": _seg_logits(torch.stack([shifted, empty]))}
    detections1 = [
        {"boxes": torch.tensor([LESION_BOX]), "scores": torch.tensor([0.9])},
        {"boxes": torch.tensor([FAR_BOX]), "scores": torch.tensor([0.99])},  # not annotated: ignored
    ]
    # batch 2: s2 label 0, annotated-negative mask and no boxes; s3 label 1 only
    batch2 = make_batch(
        torch.stack([empty, lesion]),
        [0, 1],
        [True, False],
        boxes=[torch.zeros(0, 4), torch.zeros(0, 4)],
        has_boxes=[True, False],
    )
    outputs2 = {"classification": _logits_for([0.3, 0.4]), "segmentation": _seg_logits(torch.stack([empty, empty]))}
    detections2 = [
        {"boxes": torch.tensor([FAR_BOX]), "scores": torch.tensor([0.95])},  # FP on an annotated negative
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)},
    ]
    return [(outputs1, batch1, detections1), (outputs2, batch2, detections2)]


def test_two_batches_with_partial_annotations_hand_worked():
    # Prepare
    evaluator = MultiTaskEvaluator(TASKS, num_classes=2)
    # Execute
    for outputs, batch, detections in _two_batches():
        evaluator.update(outputs, batch, detections)
    result = evaluator.compute()
    # Assert classification: labelled s0 (1, p=0.9), s2 (0, p=0.3), s3 (1, p=0.4) -> predictions 1, 0, 0
    assert result["classification/n"] == 3
    assert result["classification/accuracy"] == pytest.approx(2 / 3)
    assert result["classification/sensitivity"] == pytest.approx(1 / 2)
    assert result["classification/specificity"] == pytest.approx(1.0)
    assert result["classification/f1"] == pytest.approx(2 / 3)
    assert result["classification/auc"] == pytest.approx(1.0)
    # segmentation: s0 Dice 0.5 (shifted square), s2 empty/empty Dice 1; s1 and s3 have no mask
    assert result["segmentation/n"] == 2 and result["segmentation/n_lesion"] == 1
    assert result["segmentation/dice"] == pytest.approx(0.75)
    assert result["segmentation/dice_lesion"] == pytest.approx(0.5)
    assert result["segmentation/iou"] == pytest.approx((1 / 3 + 1) / 2)
    assert result["segmentation/hd95"] == pytest.approx(0.5)  # (1 + 0) / 2
    # detection: FP (0.95) on s2 ranked before the TP (0.9) on s0 -> AP 1/2; RSNA (1 + 0) / 2
    assert result["detection/n"] == 2 and result["detection/n_boxes"] == 1
    assert result["detection/map50"] == pytest.approx(0.5)
    assert result["detection/map_rsna"] == pytest.approx(0.5)
    assert evaluator.notes == []
    json.dumps(result, allow_nan=False)


def test_no_annotated_sample_gives_json_safe_none_with_notes():
    # Prepare
    evaluator = MultiTaskEvaluator(TASKS, num_classes=2)
    batch = make_batch(torch.zeros(2, 1, SIZE, SIZE), [-1, -1], [False, False])
    outputs = {"classification": torch.zeros(2, 2), "segmentation": torch.zeros(2, 1, SIZE, SIZE)}
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}
    # Execute
    evaluator.update(outputs, batch, [empty, empty])
    result = evaluator.compute()
    # Assert
    assert result["classification/n"] == 0 and result["segmentation/n"] == 0 and result["detection/n"] == 0
    metric_values = [v for k, v in result.items() if not k.split("/")[1].startswith("n")]
    assert metric_values and all(v is None for v in metric_values)
    assert len(evaluator.notes) >= 3
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())
    json.dumps(result, allow_nan=False)


def test_reset_forgets_everything():
    # Prepare
    evaluator = MultiTaskEvaluator(("classification",), num_classes=2)
    outputs, batch, _ = _two_batches()[0]
    evaluator.update({"classification": outputs["classification"]}, batch)
    # Execute
    evaluator.reset()
    result = evaluator.compute()
    # Assert
    assert result["classification/n"] == 0 and result["classification/auc"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tasks": (), "num_classes": 2}, "non-empty"),
        ({"tasks": ("segmentaton",), "num_classes": 2}, "distinct tasks"),
        ({"tasks": ("classification",), "num_classes": 1}, "num_classes"),
        ({"tasks": ("segmentation",), "num_classes": 2, "seg_threshold": 1.0}, "seg_threshold"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        MultiTaskEvaluator(**kwargs)


def test_bad_updates_raise():
    # Prepare
    evaluator = MultiTaskEvaluator(TASKS, num_classes=2)
    outputs, batch, detections = _two_batches()[0]
    # Execute / Assert
    with pytest.raises(ValueError, match="decoded detections of all 2 samples"):
        evaluator.update(outputs, batch, None)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        evaluator.update({**outputs, "classification": torch.zeros(2, 3)}, batch, detections)
    with pytest.raises(ValueError, match="'segmentation'"):
        evaluator.update({"classification": outputs["classification"]}, batch, detections)


def test_classification_at_a_threshold_keeps_the_argmax_values_beside_it():
    # Prepare: labelled s0 (1, p=0.9), s2 (0, p=0.3), s3 (1, p=0.4); at 0.35 predictions 1, 0, 1
    evaluator = MultiTaskEvaluator(("classification",), num_classes=2)
    for outputs, batch, _ in _two_batches():
        evaluator.update({"classification": outputs["classification"]}, batch)
    # Execute
    argmax = evaluator.compute()
    at = evaluator.classification_at(0.35)
    # Assert
    assert argmax["classification/sensitivity"] == pytest.approx(1 / 2)
    assert at == {
        "classification/threshold": 0.35,
        "classification/accuracy_at_threshold": 1.0,
        "classification/sensitivity_at_threshold": 1.0,
        "classification/specificity_at_threshold": 1.0,
        "classification/f1_at_threshold": 1.0,
    }


@pytest.mark.parametrize(("tasks", "num_classes"), [(("classification",), 3), (("segmentation",), 2)])
def test_classification_at_a_threshold_needs_a_binary_classifier(tasks, num_classes):
    with pytest.raises(ValueError, match="a threshold needs binary classification"):
        MultiTaskEvaluator(tasks, num_classes=num_classes).classification_at(0.5)
