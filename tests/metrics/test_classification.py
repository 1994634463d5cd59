import numpy as np
import pytest
import torch

from mtmedformer.metrics import classification_metrics, roc_auc


def _binary_probs(p1: list[float]) -> np.ndarray:
    p1 = np.asarray(p1)
    return np.stack([1 - p1, p1], axis=1)


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        # ties count one half: 0.8 beats both negatives, 0.5 ties both -> (2 + 2 * 0.5) / 4
        ([0.5, 0.5, 0.5, 0.8], [0, 1, 0, 1], 0.75),
        ([0.9, 0.8, 0.1], [1, 1, 0], 1.0),
        ([0.1, 0.2, 0.9], [1, 1, 0], 0.0),
        ([0.3, 0.3, 0.3, 0.3], [0, 1, 0, 1], 0.5),
    ],
)
def test_auc_hand_worked(scores, labels, expected):
    # Execute
    value = roc_auc(np.asarray(scores), np.asarray(labels))
    # Assert
    assert value == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_of_single_class_set_is_none(labels):
    # Execute / Assert
    assert roc_auc(np.full(len(labels), 0.5), np.asarray(labels, dtype=np.int64)) is None


def test_binary_metrics_hand_worked():
    # Prepare: labels 1,1,1,0,0,0,0 predicted 1,1,0,1,0,0,0 -> TP 2, FN 1, FP 1, TN 3
    probs = _binary_probs([0.9, 0.8, 0.2, 0.6, 0.3, 0.1, 0.4])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    # Execute
    values, notes = classification_metrics(torch.from_numpy(probs), torch.from_numpy(labels))
    # Assert
    assert values["n"] == 7
    assert values["accuracy"] == pytest.approx(5 / 7)
    assert values["sensitivity"] == pytest.approx(2 / 3)
    assert values["specificity"] == pytest.approx(3 / 4)
    assert values["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # AUC: positives 0.9, 0.8 beat all 4 negatives; 0.2 beats only 0.1 -> (4 + 4 + 1) / 12
    assert values["auc"] == pytest.approx(9 / 12)
    assert notes == []


def test_single_class_set_gives_none_with_notes():
    # Prepare: only positives, all predicted positive
    probs = _binary_probs([0.9, 0.7])
    # Execute
    values, notes = classification_metrics(probs, np.array([1, 1]))
    # Assert
    assert values["auc"] is None and values["specificity"] is None
    assert values["sensitivity"] == 1.0 and values["f1"] == 1.0 and values["accuracy"] == 1.0
    assert any("auc is undefined" in n for n in notes)
    assert any("specificity is undefined" in n for n in notes)


def test_multiclass_macro_hand_worked():
    # Prepare: labels 0,1,2,2 predicted (argmax) 0,2,2,2
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.3, 0.6], [0.1, 0.2, 0.7], [0.1, 0.35, 0.55]])
    labels = np.array([0, 1, 2, 2])
    # Execute
    values, notes = classification_metrics(probs, labels)
    # Assert
    assert values["accuracy"] == pytest.approx(3 / 4)
    assert values["sensitivity"] == pytest.approx((1 + 0 + 1) / 3)  # per-class recall
    assert values["specificity"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert values["f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    # one-vs-rest AUC: class 0 -> 1, class 1 -> 2/3, class 2 -> 3/4
    assert values["auc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert notes == []


def test_multiclass_absent_class_is_left_out_and_noted():
    # Prepare: class 1 never occurs and is never predicted
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.1, 0.3], [0.2, 0.1, 0.7], [0.3, 0.1, 0.6]])
    labels = np.array([0, 0, 2, 2])
    # Execute
    values, notes = classification_metrics(probs, labels)
    # Assert: class 1 AUC, recall and F1 undefined -> averages over classes 0 and 2
    assert values["auc"] == pytest.approx(1.0)
    assert values["sensitivity"] == pytest.approx(1.0)
    assert values["specificity"] == pytest.approx(1.0)  # defined for all three classes
    assert values["f1"] == pytest.approx(1.0)
    assert any("classes [1] left out" in n and "auc" in n for n in notes)


def test_empty_set_gives_all_none():
    # Execute
    values, notes = classification_metrics(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    # Assert
    assert values == {"n": 0, "auc": None, "accuracy": None, "sensitivity": None, "specificity": None, "f1": None}
    assert notes


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (np.zeros((3, 2)), np.array([0, 1]), "expect"),
        (np.zeros((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (np.zeros((2, 1)), np.array([0, 0]), "C >= 2"),
    ],
)
def test_bad_inputs_raise(probs, labels, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        classification_metrics(probs, labels)
