import numpy as np
import pytest

from mtmedformer.metrics import choose_operating_point, classification_metrics


def _rates(scores, labels, threshold):
    pred = np.asarray(scores) >= threshold
    labels = np.asarray(labels)
    return pred[labels == 1].mean(), (~pred[labels == 0]).mean()


def test_youden_on_a_separable_set_separates_the_classes():
    # Prepare: every positive scores above every negative, all below 0.5 (argmax would call all negative)
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # Execute
    point = choose_operating_point(scores, labels, "youden")
    # Assert: the lowest positive score is the only threshold with J = 1
    assert point.threshold == pytest.approx(0.3)
    assert _rates(scores, labels, point.threshold) == (1.0, 1.0)
    assert point.rule == "youden" and not point.fallback and point.notes == ()


def test_youden_hand_worked_on_an_overlapping_set():
    # Prepare: negatives 0.1, 0.4, 0.6; positives 0.2, 0.7, 0.9. J at each candidate t (positive iff
    # score >= t; P = N = 3): 0.1: 3/3 + 0/3 - 1 = 0; 0.2: 3/3 + 1/3 - 1 = 1/3; 0.4: 2/3 + 1/3 - 1 = 0;
    #   0.6: 2/3 + 2/3 - 1 = 1/3; 0.7: 2/3 + 3/3 - 1 = 2/3; 0.9: 1/3 + 3/3 - 1 = 1/3
    scores = np.array([0.1, 0.4, 0.6, 0.2, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # Execute
    point = choose_operating_point(scores, labels)
    # Assert: sensitivity 2/3, specificity 1 there
    assert point.threshold == pytest.approx(0.7)
    assert _rates(scores, labels, point.threshold) == pytest.approx((2 / 3, 1.0))


def test_youden_ties_go_to_the_threshold_closest_to_one_half():
    # Prepare: negatives 0.05, 0.1, 0.3; positives 0.2, 0.45, 0.5. J (P = N = 3) at each candidate:
    #   0.05: 3/3 + 0/3 - 1 = 0; 0.1: 1/3; 0.2: 3/3 + 2/3 - 1 = 2/3; 0.3: 2/3 + 2/3 - 1 = 1/3;
    #   0.45: 2/3 + 3/3 - 1 = 2/3; 0.5: 1/3. The tie 0.2 / 0.45 goes to 0.45, closer to 0.5.
    scores = np.array([0.1, 0.3, 0.2, 0.45, 0.5, 0.05])
    labels = np.array([0, 0, 1, 1, 1, 0])
    # Execute / Assert
    assert choose_operating_point(scores, labels).threshold == pytest.approx(0.45)


def test_youden_equal_distances_to_one_half_pick_the_larger_threshold():
    # Prepare: negatives 0.25, 0.5; positives 0.375, 0.625 (exact binary fractions). J (P = N = 2):
    #   0.25: 0; 0.375: 2/2 + 1/2 - 1 = 1/2; 0.5: 1/2 + 1/2 - 1 = 0; 0.625: 1/2 + 2/2 - 1 = 1/2.
    #   0.375 and 0.625 are both 0.125 from 0.5: the larger wins.
    scores = np.array([0.25, 0.5, 0.375, 0.625])
    labels = np.array([0, 0, 1, 1])
    # Execute / Assert
    assert choose_operating_point(scores, labels).threshold == 0.625


def test_target_sensitivity_is_met_with_the_largest_such_threshold():
    # Prepare: ten positives spread over (0, 1), ten negatives below 0.5
    rng = np.random.default_rng(0)
    positives, negatives = rng.uniform(0.2, 1.0, 10), rng.uniform(0.0, 0.5, 10)
    scores = np.concatenate([positives, negatives])
    labels = np.array([1] * 10 + [0] * 10)
    for target in (0.5, 0.7, 0.9, 1.0):
        # Execute
        point = choose_operating_point(scores, labels, "target_sensitivity", target_sensitivity=target)
        # Assert: met at the chosen threshold, missed at every larger score
        assert _rates(scores, labels, point.threshold)[0] >= target
        larger = scores[scores > point.threshold]
        assert all(_rates(scores, labels, t)[0] < target for t in larger)
        assert point.threshold == np.sort(positives)[-round(target * 10)]  # the k-th largest positive


@pytest.mark.parametrize(
    ("labels", "reason"), [([1, 1, 1], "only class 1"), ([0, 0], "only class 0"), ([], "no labelled sample")]
)
@pytest.mark.parametrize("rule", ["youden", "target_sensitivity"])
def test_one_class_or_no_labels_fall_back_to_the_fixed_threshold_with_a_note(labels, reason, rule):
    # Prepare
    scores = np.linspace(0.1, 0.9, len(labels))
    # Execute
    point = choose_operating_point(scores, np.asarray(labels, dtype=np.int64), rule, fixed_threshold=0.37)
    # Assert
    assert point.threshold == 0.37 and point.rule == "fixed" and point.fallback
    assert len(point.notes) == 1 and reason in point.notes[0] and "0.37" in point.notes[0]


def test_fixed_rule_ignores_the_scores():
    point = choose_operating_point(np.array([0.1, 0.9]), np.array([0, 1]), "fixed", fixed_threshold=0.42)
    assert point.threshold == 0.42 and not point.fallback and point.as_dict() == {
        "threshold": 0.42, "rule": "fixed", "fallback": False
    }


def test_choice_is_deterministic_and_independent_of_sample_order():
    # Prepare: many tied scores (rounded), shuffled copies
    rng = np.random.default_rng(1)
    scores = np.round(rng.uniform(0, 1, 200), 1)
    labels = (rng.uniform(0, 1, 200) < scores).astype(np.int64)
    order = rng.permutation(200)
    for rule in ("youden", "target_sensitivity"):
        # Execute
        first = choose_operating_point(scores, labels, rule)
        again = choose_operating_point(scores, labels, rule)
        shuffled = choose_operating_point(scores[order], labels[order], rule)
        # Assert
        assert first == again == shuffled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "best"}, "rule must be one of"),
        ({"rule": "target_sensitivity", "target_sensitivity": 0.0}, "target_sensitivity must be in"),
        ({"labels": np.array([0, 2])}, "labels must be in"),
        ({"scores": np.array([0.1, np.nan])}, "scores must be finite"),
        ({"labels": np.array([0, 1, 1])}, "one length"),
    ],
)
def test_bad_inputs_are_refused(kwargs, message):
    args = {"scores": np.array([0.1, 0.9]), "labels": np.array([0, 1]), **kwargs}
    with pytest.raises(ValueError, match=message):
        choose_operating_point(args.pop("scores"), args.pop("labels"), **args)


def test_classification_metrics_at_a_threshold_hand_worked():
    # Prepare: labels 1,1,1,0,0 with class-1 scores 0.9, 0.4, 0.3, 0.35, 0.1; at 0.3: TP 3, FN 0, FP 1, TN 1
    p1 = np.array([0.9, 0.4, 0.3, 0.35, 0.1])
    probs = np.stack([1 - p1, p1], axis=1)
    labels = np.array([1, 1, 1, 0, 0])
    # Execute
    at_half, _ = classification_metrics(probs, labels)
    at_03, notes = classification_metrics(probs, labels, threshold=0.3)
    # Assert
    assert at_half["sensitivity"] == pytest.approx(1 / 3) and at_half["specificity"] == 1.0
    assert at_03["sensitivity"] == 1.0 and at_03["specificity"] == pytest.approx(1 / 2)
    assert at_03["accuracy"] == pytest.approx(4 / 5) and at_03["f1"] == pytest.approx(6 / 7)
    assert at_03["auc"] == at_half["auc"] and notes == []


def test_a_threshold_is_refused_for_multi_class_probabilities():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="2 classes only"):
        classification_metrics(probs, np.array([0, 2]), threshold=0.5)
