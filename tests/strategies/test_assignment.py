"""Assignments (against brute force), the exact two-level head solve, and permutation utilities."""

from __future__ import annotations

import itertools

import pytest
import torch

from strategies.matching import SpecBuilder, apply_permutations, compose, invert, random_permutations
from strategies.matching.assignment import solve_assignment, solve_block_assignment, unit_rows
from strategies.matching.permute import axis_index, block_permutation, moved_fraction, split_block_permutation
from strategies.matching.spec import Occurrence


def _score(sim, perm):
    return float(sim[torch.arange(len(perm)), perm].sum())


@pytest.mark.parametrize("n", [1, 3, 5])
def test_solve_assignment_matches_brute_force(n):
    # Prepare
    sim = torch.randn(n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)

    # Execute
    perm, value = solve_assignment(sim)

    # Assert
    best = max(_score(sim, torch.tensor(p)) for p in itertools.permutations(range(n)))
    assert value == pytest.approx(best) and _score(sim, perm) == pytest.approx(best)


def test_solve_assignment_rejects_non_finite_scores():
    with pytest.raises(ValueError, match="NaN/Inf"):
        solve_assignment(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]))


def _block_perms(blocks, m):
    for block_perm in itertools.permutations(range(blocks)):
        for within in itertools.product(itertools.permutations(range(m)), repeat=blocks):
            yield torch.tensor(block_perm), torch.tensor(within)


@pytest.mark.parametrize(("blocks", "m"), [(2, 2), (3, 2), (2, 3)])
def test_block_assignment_is_the_exact_joint_optimum(blocks, m):
    # Prepare: two tied groups (q/k and v/o) sharing the block permutation.
    generator = torch.Generator().manual_seed(blocks * 10 + m)
    sims = [torch.randn(blocks * m, blocks * m, generator=generator, dtype=torch.float64) for _ in range(2)]

    # Execute
    perms, value = solve_block_assignment(sims, blocks)

    # Assert: brute force over the shared block permutation and both groups' within-block permutations.
    best = -float("inf")
    for block_perm, _ in _block_perms(blocks, 1):
        total = 0.0
        for sim in sims:
            total += max(
                _score(sim, block_permutation(block_perm, within))
                for _, within in _block_perms(blocks, m)
            )
        best = max(best, total)
    assert value == pytest.approx(best)
    assert sum(_score(s, p) for s, p in zip(sims, perms, strict=True)) == pytest.approx(best)
    heads = [split_block_permutation(p, blocks)[0] for p in perms]
    assert torch.equal(heads[0], heads[1])


def test_block_permutation_round_trip_and_rejection():
    # Prepare
    block_perm = torch.tensor([2, 0, 1])
    within = torch.tensor([[1, 0], [0, 1], [1, 0]])

    # Execute
    perm = block_permutation(block_perm, within)

    # Assert
    assert perm.tolist() == [5, 4, 0, 1, 3, 2]
    back = split_block_permutation(perm, 3)
    assert torch.equal(back[0], block_perm) and torch.equal(back[1], within)
    with pytest.raises(ValueError, match="whole blocks"):
        split_block_permutation(torch.tensor([1, 2, 0, 3]), 2)


def test_unit_rows_gathers_every_entry_of_a_unit():
    # Prepare: axis 1 holds (None: 2 entries) then 3 units of blocks of 2.
    tensor = torch.arange(2 * 8 * 3).reshape(2, 8, 3)
    occ = Occurrence("t", 1, 2, 3, 2)

    # Execute
    rows = unit_rows(tensor, occ)

    # Assert
    assert rows.shape == (3, 2 * 2 * 3)
    assert set(rows[1].tolist()) == set(tensor[:, 4:6].flatten().tolist())


def test_axis_index_permutes_segments_and_keeps_the_rest():
    # Prepare
    b = SpecBuilder()
    b.group("g", 3)
    entry = b.axis((None, 2), ("g", 3, 2))

    # Execute
    index = axis_index(entry, {"g": torch.tensor([2, 0, 1])})

    # Assert
    assert index.tolist() == [0, 1, 6, 7, 2, 3, 4, 5]
    assert axis_index(entry, {}) is None


def test_apply_then_inverse_is_the_identity_and_compose_chains():
    # Prepare
    b = SpecBuilder()
    g, h = b.group("g", 4), b.group("h", 5)
    b.add("w", g, h)
    b.add("v", b.axis(g, g))
    spec = b.build()
    state = {"w": torch.randn(4, 5), "v": torch.randn(8)}
    first = random_permutations(spec, torch.Generator().manual_seed(0))
    then = random_permutations(spec, torch.Generator().manual_seed(1))

    # Execute
    round_trip = apply_permutations(apply_permutations(state, spec, first), spec, invert(first))
    chained = apply_permutations(apply_permutations(state, spec, first), spec, then)

    # Assert
    assert all(torch.equal(round_trip[k], state[k]) for k in state)
    direct = apply_permutations(state, spec, compose(first, then))
    assert all(torch.equal(chained[k], direct[k]) for k in state)
    assert moved_fraction(torch.arange(4)) == 0.0 and moved_fraction(torch.tensor([1, 0, 2])) == pytest.approx(2 / 3)
