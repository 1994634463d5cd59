import math

import pytest
import torch

from mtmedformer.config.loss import LossConfig
from mtmedformer.losses import FixedWeighting, UncertaintyWeighting, build_weighting

TASKS = ("classification", "segmentation", "detection")


def test_fixed_weights_scale_terms_exactly():
    # Prepare
    weighting = FixedWeighting(TASKS, {"classification": 2.0, "segmentation": 0.5, "detection": 3.0})
    terms = {"classification": torch.tensor(1.25), "segmentation": torch.tensor(4.0)}
    # Execute
    total = weighting(terms)
    # Assert: detection is absent and contributes nothing
    assert total.item() == 2.0 * 1.25 + 0.5 * 4.0
    assert weighting.effective_weights() == {"classification": 2.0, "segmentation": 0.5, "detection": 3.0}


@pytest.mark.parametrize("init", [0.0, 0.7, -1.2])
def test_uncertainty_total_hand_worked(init):
    # Prepare
    weighting = UncertaintyWeighting(TASKS, init=init)
    terms = {"segmentation": torch.tensor(2.0), "detection": torch.tensor(0.5)}
    # Execute
    total = weighting(terms)
    # Assert: sum_t exp(-s) L_t + s over the two tasks present
    expected = math.exp(-init) * 2.0 + init + math.exp(-init) * 0.5 + init
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weighting.effective_weights()["classification"] == pytest.approx(math.exp(-init))


def test_uncertainty_weights_learn_and_absent_task_is_untouched():
    # Prepare
    weighting = UncertaintyWeighting(TASKS)
    optimiser = torch.optim.SGD(weighting.parameters(), lr=0.1)
    terms = {"classification": torch.tensor(3.0), "segmentation": torch.tensor(0.2)}
    before = dict(weighting.effective_weights())
    # Execute
    weighting(terms).backward()
    optimiser.step()
    after = weighting.effective_weights()
    # Assert: d/ds (exp(-s) L + s) = 1 - L at s = 0, so a big loss gets a smaller weight and a small loss a
    # larger one; detection had no term, so no gradient and no change
    assert weighting.log_vars["detection"].grad is None
    assert after["classification"] < before["classification"]
    assert after["segmentation"] > before["segmentation"]
    assert after["detection"] == before["detection"]
    assert weighting.log_vars["classification"].item() == pytest.approx(-0.1 * (1 - 3.0))


def test_build_weighting_follows_config():
    # Execute / Assert
    assert isinstance(build_weighting(LossConfig(), TASKS), FixedWeighting)
    assert isinstance(build_weighting(LossConfig(weighting="uncertainty"), TASKS), UncertaintyWeighting)


@pytest.mark.parametrize(
    "weighting", [FixedWeighting(("segmentation",), {"segmentation": 1.0}), UncertaintyWeighting(("segmentation",))]
)
def test_terms_of_disabled_tasks_or_no_terms_raise(weighting):
    # Execute / Assert
    with pytest.raises(ValueError, match="not enabled"):
        weighting({"classification": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="no loss term"):
        weighting({})
