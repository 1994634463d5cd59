"""The exact shortcuts of the assignment solvers and alignment give the same answers as the plain solvers."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from strategies.matching import assignment
from strategies.matching.assignment import solve_assignment, solve_block_assignment


def _scipy_value(sim: np.ndarray) -> float:
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return float(sim[rows, cols].sum())


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("structured", [False, True])
def test_solve_assignment_matches_scipy(seed, structured):
    # Prepare: random scores, or a permuted diagonal-dominant matrix where the argmax shortcut applies
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    sim = rng.normal(size=(n, n))
    if structured:
        sim[np.arange(n), rng.permutation(n)] += 10.0
    # Execute
    perm, value = solve_assignment(torch.from_numpy(sim.astype(np.float32)))
    # Assert: a permutation reaching scipy's optimum
    assert sorted(perm.tolist()) == list(range(n))
    assert value == pytest.approx(_scipy_value(sim.astype(np.float32).astype(np.float64)), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("structured", [False, True])
def test_block_assignment_bound_shortcut_equals_the_full_pair_loop(seed, structured, monkeypatch):
    # Prepare: two tied groups (q/k and v/o) of H blocks of m units
    rng = np.random.default_rng(seed)
    blocks, m = int(rng.integers(2, 5)), int(rng.integers(2, 6))
    sims = []
    block_perm = rng.permutation(blocks)
    for _ in range(2):
        sim = rng.normal(size=(blocks * m, blocks * m))
        if structured:
            for a in range(blocks):
                inner = rng.permutation(m)
                for i in range(m):
                    sim[a * m + i, block_perm[a] * m + inner[i]] += 8.0
        sims.append(torch.from_numpy(sim))
    # Execute
    fast_perms, fast_value = solve_block_assignment(sims, blocks)
    monkeypatch.setattr(assignment, "BOUND", False)
    monkeypatch.setattr(assignment, "SHORTCUT", False)
    full_perms, full_value = solve_block_assignment(sims, blocks)
    # Assert
    assert fast_value == pytest.approx(full_value, rel=1e-9, abs=1e-9)
    for fast, full in zip(fast_perms, full_perms, strict=True):
        assert sorted(fast.tolist()) == list(range(blocks * m))
        if structured:  # a unique optimum: the permutations themselves agree
            assert torch.equal(fast, full)
