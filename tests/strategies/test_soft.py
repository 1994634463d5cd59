"""Soft (Sinkhorn optimal-transport) alignment: the map itself, its application, and match_and_merge with it."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from mtmedformer.config.loader import FieldError
from strategies.matching import (
    ClientUpdate,
    MatchingConfig,
    apply_permutations,
    match_and_merge,
    random_permutations,
)
from strategies.matching.align import group_scores
from strategies.matching.soft import apply_soft_maps, off_diagonal_mass, sinkhorn_map, soft_maps
from tests.strategies.helpers import noisy, tiny_model, weighted_average

ALL = {"classification": 1, "segmentation": 1, "detection": 1}
SOFT = MatchingConfig(alignment="sinkhorn")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _tasks(n: int) -> dict[str, int]:
    return dict.fromkeys(ALL, n)


def _permutation_matrix(perm: torch.Tensor) -> torch.Tensor:
    """``P[i, perm[i]] = 1``: row ``i`` of ``P @ rows`` is ``rows[perm[i]]``, as ``index_select`` gives."""
    matrix = torch.zeros(perm.numel(), perm.numel(), dtype=torch.float64)
    matrix[torch.arange(perm.numel()), perm] = 1.0
    return matrix


def _max_difference(a, b) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def test_sinkhorn_map_is_doubly_stochastic():
    # Prepare
    scores = torch.randn(12, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    # Execute
    soft = sinkhorn_map(scores, epsilon=0.2)

    # Assert
    assert (soft >= 0).all()
    torch.testing.assert_close(soft.sum(dim=0), torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-9)


def test_small_epsilon_gives_the_optimal_assignment_and_large_epsilon_spreads_the_mass():
    # Prepare: a score matrix whose best assignment is not the identity.
    scores = torch.randn(10, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows, cols = linear_sum_assignment(scores.numpy(), maximize=True)
    best = torch.as_tensor(cols)[torch.argsort(torch.as_tensor(rows))]

    # Execute
    sharp = sinkhorn_map(scores, epsilon=1e-3, iterations=5000)
    aligned = scores[:, best]  # columns reordered so that the identity is the optimum, as after hard alignment
    blurred = [off_diagonal_mass(sinkhorn_map(aligned, epsilon=e)) for e in (0.01, 0.1, 1.0)]

    # Assert: near the permutation matrix of the hard optimum; more regularisation moves more mass.
    torch.testing.assert_close(sharp, _permutation_matrix(best), rtol=0, atol=1e-3)
    assert blurred[0] < blurred[1] < blurred[2] < 1.0


def test_equal_scores_give_the_identity():
    assert torch.equal(sinkhorn_map(torch.ones(4, 4), epsilon=0.1), torch.eye(4, dtype=torch.float64))


@pytest.mark.parametrize(
    ("scores", "epsilon", "message"),
    [
        (torch.ones(3, 4), 0.1, "square"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 0.1, "NaN/Inf"),
        (torch.eye(3), 0.0, "epsilon"),
    ],
)
def test_bad_inputs_raise(scores, epsilon, message):
    with pytest.raises(ValueError, match=message):
        sinkhorn_map(scores, epsilon)


def test_permutation_matrices_reproduce_the_hard_permutation(base, spec):
    # Prepare
    perms = random_permutations(spec, torch.Generator().manual_seed(3))

    # Execute
    soft = apply_soft_maps(base, spec, {group: _permutation_matrix(perm) for group, perm in perms.items()})

    # Assert
    hard = apply_permutations(base, spec, perms)
    assert soft.keys() == hard.keys()
    assert _max_difference(soft, hard) <= 1e-12
    assert all(soft[k].dtype == base[k].dtype and soft[k].shape == base[k].shape for k in base)


def test_attention_maps_stay_inside_their_heads(base, spec):
    # Prepare: a noisy client against the model, every tensor weighted.
    client = noisy(base, 0.5, seed=4)
    weights = {k: 1.0 for k, v in base.items() if v.is_floating_point()}

    # Execute
    maps = soft_maps(client, base, spec, weights, epsilon=0.5)

    # Assert: for every tied group, no mass crosses from one head to another.
    assert spec.ties
    for tie in spec.ties:
        for group in tie.groups:
            m = spec.group_sizes[group] // tie.blocks
            head = torch.arange(spec.group_sizes[group]) // m
            across = maps[group][head[:, None] != head[None, :]]
            assert float(across.abs().max()) == 0.0
            assert off_diagonal_mass(maps[group]) > 0.0
    assert set(maps) <= set(group_scores(client, base, spec, weights))


@pytest.mark.parametrize("with_previous", [False, True])
def test_identical_clients_give_fedavg(base, spec, with_previous):
    # Prepare: equal copies, so FedAvg gives the model back.
    clients = {f"site-{j}": ClientUpdate(base, n, _tasks(n)) for j, n in enumerate([3, 9, 4])}

    # Execute
    result = match_and_merge(clients, spec, previous=base if with_previous else None, config=SOFT)

    # Assert
    assert _max_difference(result.state_dict, base) <= 1e-6
    assert 0.0 <= result.diagnostics.summary()["matching/soft-offdiagonal"] <= 1e-6


def test_recovers_known_permutations(base, spec):
    # Prepare: permuted exact copies of the model, each with its own permutation of every group.
    clients = {
        f"site-{j}": ClientUpdate(
            apply_permutations(base, spec, random_permutations(spec, torch.Generator().manual_seed(10 + j))),
            4,
            _tasks(4),
        )
        for j in range(3)
    }

    # Execute
    result = match_and_merge(clients, spec, previous=base, config=SOFT)

    # Assert: the hard permutations are undone and the soft maps then leave the aligned copies as they are.
    assert _max_difference(result.state_dict, base) <= 1e-6


def test_soft_merge_of_noisy_clients_differs_from_hard_and_from_fedavg_and_does_not_depend_on_order(base, spec):
    # Prepare
    counts = [5, 8, 2]
    clients = {
        f"site-{j}": ClientUpdate(
            apply_permutations(
                noisy(base, 0.6, seed=20 + j), spec, random_permutations(spec, torch.Generator().manual_seed(30 + j))
            ),
            n,
            _tasks(n),
        )
        for j, n in enumerate(counts)
    }

    # Execute
    soft = match_and_merge(clients, spec, previous=base, config=SOFT)
    again = match_and_merge(dict(reversed(list(clients.items()))), spec, previous=base, config=SOFT)
    hard = match_and_merge(clients, spec, previous=base)

    # Assert
    assert _max_difference(soft.state_dict, again.state_dict) == 0.0
    assert _max_difference(soft.state_dict, hard.state_dict) > 1e-4
    assert _max_difference(soft.state_dict, weighted_average([c.state for c in clients.values()], counts)) > 1e-2
    assert 0.0 < soft.diagnostics.summary()["matching/soft-offdiagonal"] < 1.0
    assert "matching/soft-offdiagonal" not in hard.diagnostics.summary()


@pytest.mark.parametrize(
    "kwargs",
    [{"alignment": "ot"}, {"sinkhorn_epsilon": 0.0}, {"sinkhorn_epsilon": float("nan")}, {"sinkhorn_iterations": 0}],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(FieldError):
        MatchingConfig(**kwargs)
