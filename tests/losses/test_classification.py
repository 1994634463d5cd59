import math

import pytest
import torch

from mtmedformer.config.loss import ClassificationLossConfig
from mtmedformer.losses import ClassificationLoss


def test_cross_entropy_hand_worked():
    # Prepare: softmax([0, ln 3]) = [1/4, 3/4]
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = torch.tensor([1, 0])
    # Execute
    value = ClassificationLoss()(logits, labels)
    # Assert: mean of -log(3/4) and -log(1/4)
    assert value.item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)


def test_class_weights_give_weighted_mean():
    # Prepare
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    labels = torch.tensor([1, 0])
    loss = ClassificationLoss(ClassificationLossConfig(class_weights=(1.0, 3.0)))
    # Execute
    value = loss(logits, labels)
    # Assert: sample 0 (class 1, weight 3) costs -log(3/4), sample 1 (class 0, weight 1) costs -log(1/4)
    assert value.item() == pytest.approx((3 * -math.log(0.75) + 1 * -math.log(0.25)) / (3 + 1), rel=1e-6)


def test_label_smoothing_hand_worked():
    # Prepare: with smoothing e and 2 classes the target is [e/2, 1 - e/2]
    logits = torch.tensor([[0.0, math.log(3.0)]])
    loss = ClassificationLoss(ClassificationLossConfig(label_smoothing=0.2))
    # Execute
    value = loss(logits, torch.tensor([1]))
    # Assert
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    assert value.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("labels", [[-1, 0], [0, 2]])
def test_labels_outside_range_raise(labels):
    # Execute / Assert
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ClassificationLoss()(torch.zeros(2, 2), torch.tensor(labels))


def test_class_weight_count_must_match_classes():
    # Prepare
    loss = ClassificationLoss(ClassificationLossConfig(class_weights=(1.0, 2.0)))
    # Execute / Assert
    with pytest.raises(ValueError, match="class_weights has 2 values but the model predicts 3"):
        loss(torch.zeros(2, 3), torch.tensor([0, 2]))
