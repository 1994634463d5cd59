"""engine.loop.evaluate: choosing the threshold on the evaluated split, or applying a given one."""

import logging

import pytest
import torch
from torch import nn

from mtmedformer.config.train import OperatingPointConfig
from mtmedformer.engine.loop import evaluate
from tests.losses.helpers import make_batch


class _ScoreModel(nn.Module):
    """A classifier whose class-1 logit is the image's first pixel."""

    tasks = ("classification",)

    def forward(self, image):
        logit = image[:, 0, 0, 0]
        return {"classification": torch.stack([torch.zeros_like(logit), logit], dim=1)}


def _loader(logits, labels):
    batch = make_batch(torch.zeros(len(labels), 1, 4, 4), labels, [False] * len(labels))
    batch.image[:, 0, 0, 0] = torch.tensor(logits)
    return [batch]


def test_a_separable_split_chooses_a_separating_threshold_below_one_half():
    # Prepare: every class-1 probability below 0.5, positives above negatives (argmax calls all negative)
    loader = _loader([-3.0, -2.5, -1.0, -0.5], [0, 0, 1, 1])
    # Execute
    metrics = evaluate(_ScoreModel(), loader, 2, choose_threshold=OperatingPointConfig())
    # Assert
    assert metrics["classification/sensitivity"] == 0.0  # argmax, unchanged
    assert metrics["classification/threshold"] == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item())
    assert metrics["classification/sensitivity_at_threshold"] == 1.0
    assert metrics["classification/specificity_at_threshold"] == 1.0
    assert metrics["classification/threshold_fallback"] == 0.0


def test_a_one_class_split_falls_back_to_the_fixed_threshold_and_says_so(caplog):
    # Prepare
    loader = _loader([-1.0, 1.0], [1, 1])
    # Execute
    with caplog.at_level(logging.WARNING, logger="mtmedformer"):
        metrics = evaluate(_ScoreModel(), loader, 2, choose_threshold=OperatingPointConfig(threshold=0.3))
    # Assert
    assert metrics["classification/threshold"] == 0.3 and metrics["classification/threshold_fallback"] == 1.0
    assert any("only class 1" in r.getMessage() and "0.3" in r.getMessage() for r in caplog.records)


def test_a_given_threshold_is_applied_and_not_rechosen():
    # Prepare: probabilities sigmoid(-1) ~ 0.27 (label 1) and sigmoid(1) ~ 0.73 (label 0)
    loader = _loader([-1.0, 1.0], [1, 0])
    # Execute
    metrics = evaluate(_ScoreModel(), loader, 2, threshold=0.8)
    # Assert: at 0.8 both are called negative
    assert metrics["classification/threshold"] == 0.8 and "classification/threshold_fallback" not in metrics
    assert metrics["classification/sensitivity_at_threshold"] == 0.0
    assert metrics["classification/specificity_at_threshold"] == 1.0


def test_without_a_threshold_the_metrics_are_as_before():
    metrics = evaluate(_ScoreModel(), _loader([-1.0, 1.0], [1, 0]), 2)
    assert not any("threshold" in key for key in metrics)


def test_threshold_and_choose_threshold_exclude_each_other():
    with pytest.raises(ValueError, match="not both"):
        evaluate(_ScoreModel(), _loader([0.0], [1]), 2, threshold=0.5, choose_threshold=OperatingPointConfig())
