"""PFNM posterior with a prior centred on the previous global model, on hand-worked numbers."""

from __future__ import annotations

import math

import pytest
import torch

from strategies.matching import MatchingError, posterior_mean, server_step
from strategies.matching.posterior import (
    empirical_noise_variances,
    match_weight,
    prior_precision,
    relative_weights,
    tensor_scales,
)


def test_relative_weights_are_counts_over_their_mean():
    assert relative_weights([1, 3]) == [0.5, 1.5]
    assert sum(relative_weights([7, 2, 9])) == pytest.approx(3)


@pytest.mark.parametrize("counts", [[], [0, 2], [-1], [math.nan]])
def test_relative_weights_reject_bad_counts(counts):
    with pytest.raises(MatchingError):
        relative_weights(counts)


@pytest.mark.parametrize(
    ("total", "variance", "eta"),
    [(2.0, math.inf, 1.0), (2.0, 1.0, 2 / 3), (3.0, 0.5, 3 / 5), (0.0, 1.0, 0.0)],
)
def test_server_step(total, variance, eta):
    assert server_step(total, variance) == pytest.approx(eta, abs=1e-15)


def test_posterior_mean_on_hand_worked_numbers():
    # Prepare: rho = (0.5, 1.5), values 1 and 2, prior 0 with sigma0^2 = 1:
    # (1 * 0 + 0.5 * 1 + 1.5 * 2) / (1 + 0.5 + 1.5) = 3.5 / 3 = 7/6 = 0 + (2/3) * (1.75 - 0).
    values = [torch.tensor([1.0]), torch.tensor([2.0])]

    # Execute
    with_prior = posterior_mean(values, [0.5, 1.5], prior=torch.tensor([0.0]), prior_variance=1.0)
    without = posterior_mean(values, [0.5, 1.5])

    # Assert
    assert with_prior.dtype == torch.float64
    assert float(with_prior) == pytest.approx(7 / 6, abs=1e-15)
    assert float(without) == pytest.approx(1.75, abs=1e-15)


def test_posterior_mean_needs_data():
    with pytest.raises(MatchingError, match="neither"):
        posterior_mean([], [])
    with pytest.raises(MatchingError, match="weights"):
        posterior_mean([torch.zeros(1)], [])
    with pytest.raises(MatchingError, match="prior_variance"):
        prior_precision(-1.0)


def test_match_weight_is_the_pfnm_precision_factor():
    # rho_j R / ((rho_j + R) sigma^2) = 1 * 3 / (4 * 0.5) = 1.5
    assert match_weight(1.0, 3.0, 0.5) == pytest.approx(1.5)
    assert match_weight(1.0, 0.0, 0.5) == 0.0


def test_empirical_noise_variances_on_hand_worked_numbers():
    # Prepare: values 0 and 2 with rho 1 and 3 -> mean 1.5, variance (1 * 2.25 + 3 * 0.25) / 4 = 0.75.
    aligned = [{"w": torch.zeros(2), "z": torch.zeros(2)}, {"w": torch.full((2,), 2.0), "z": torch.zeros(2)}]
    rho = [{"w": 1.0, "z": 1.0}, {"w": 3.0, "z": 0.0}]
    scales = tensor_scales({"w": torch.full((2,), 2.0), "z": torch.zeros(2)})

    # Execute
    noise = empirical_noise_variances(aligned, rho, scales, floor=1e-4)

    # Assert
    assert scales == {"w": 4.0, "z": 4.0}  # an all-zero tensor borrows the mean scale
    assert noise["w"] == pytest.approx(0.75)
    assert noise["z"] == pytest.approx(4e-4)  # one client only: the floor
