"""Similarity matrices from matrix products and their linear assignments, including the exact head solve.

Convention: ``sim[i, k]`` scores putting unit ``k`` of the client at position ``i`` of the target; an
assignment returns ``perm`` with ``perm[i] = k``, to be applied with ``index_select``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from strategies.matching.permute import block_permutation
from strategies.matching.spec import Occurrence

# Exact shortcuts, switchable so tests can compare them with the plain solvers:
SHORTCUT = True  # a row-wise argmax that is a permutation is optimal: skip linear_sum_assignment
BOUND = True  # head pairs: solve only the H sub-problems of the upper-bound-optimal block map when it is tight


def unit_rows(tensor: torch.Tensor, occ: Occurrence) -> torch.Tensor:
    """The entries of ``tensor`` that carry each unit of an occurrence, one row per unit.

    Returns
    -------
    torch.Tensor
        ``(units, features)``: row ``u`` holds ``block`` consecutive entries of axis ``occ.axis`` at
        ``occ.offset + u * block`` together with every entry of the other axes.
    """
    part = tensor.narrow(occ.axis, occ.offset, occ.units * occ.block)  # axis now has units * block entries
    part = part.movedim(occ.axis, 0)  # (units * block, *rest)
    return part.reshape(occ.units, -1)  # (units, block * prod(rest))


def solve_assignment(sim: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Maximise ``sum_i sim[i, perm[i]]`` over permutations (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    sim
        ``(n, n)`` scores.

    Returns
    -------
    perm : torch.Tensor
        ``(n,)`` int64.
    value : float
        ``sum_i sim[i, perm[i]]``.

    Raises
    ------
    ValueError
        If ``sim`` holds NaN or Inf (diverged client weights).
    """
    scores = sim.detach().cpu().numpy()  # no copy; numpy's argmax/isfinite are faster than torch's on these small sizes
    if not np.isfinite(scores).all():
        raise ValueError("similarity matrix holds NaN/Inf: a client sent non-finite weights")
    if SHORTCUT:
        best = scores.argmax(axis=1)  # (n,)
        if np.bincount(best, minlength=best.size).max() <= 1:
            value = float(scores[np.arange(best.size), best].sum(dtype=np.float64))
            return torch.from_numpy(best.astype(np.int64)), value
    perm, value = _solve_numpy(scores.astype(np.float64))
    return torch.from_numpy(perm), value


def _solve_numpy(scores: np.ndarray) -> tuple[np.ndarray, float]:
    """The optimal assignment of a finite matrix, with the exact argmax shortcut."""
    best = scores.argmax(axis=1)
    if SHORTCUT and np.unique(best).size == best.size:
        # Every row's best column is distinct: this assignment reaches the upper bound sum_i max_k sim[i, k] of
        # every assignment, so it is optimal and linear_sum_assignment is skipped.
        return best.astype(np.int64), float(scores[np.arange(best.size), best].sum())
    rows, cols = linear_sum_assignment(scores, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return perm, float(scores[rows, cols].sum())


def solve_block_assignment(sims: list[torch.Tensor], blocks: int) -> tuple[list[torch.Tensor], float]:
    """Jointly optimal permutations of tied groups that may only move whole blocks (attention heads).

    For every pair (target block ``a``, client block ``h``) each group's ``m x m`` sub-problem is solved;
    the pair's score is the sum of the groups' optima, and an ``H x H`` assignment on these scores picks the
    block permutation. Given the other groups this is the exact optimum: once the block map is fixed, the
    within-block problems decouple.

    Parameters
    ----------
    sims
        One ``(H * m_g, H * m_g)`` similarity matrix per tied group.
    blocks
        ``H``.

    Returns
    -------
    perms : list[torch.Tensor]
        One ``(H * m_g,)`` block-structured permutation per group (same order as ``sims``).
    value : float
        The summed score of the assignment.
    """
    grids = []
    for sim in sims:
        m = sim.shape[0] // blocks
        scores = sim.detach().to(torch.float64).cpu().numpy()  # one conversion and check per group
        if not np.isfinite(scores).all():
            raise ValueError("similarity matrix holds NaN/Inf: a client sent non-finite weights")
        grids.append(scores.reshape(blocks, m, blocks, m))  # (target block, unit, client block, unit)
    if BOUND:
        # U[a, h] = sum_g sum_i max_k sim_g[a, i, h, k] bounds every pair score from above. If the
        # block assignment that is optimal for U reaches U with its exact within-block optima, no other block
        # assignment can beat it (its exact score <= its U score <= this one): only H sub-problems are solved.
        upper = sum(grid.max(axis=3).sum(axis=1) for grid in grids)  # (H, H)
        block_perm_u, bound = _solve_numpy(upper)
        value = 0.0
        within_u = []
        for grid in grids:
            rows = []
            for a in range(blocks):
                perm, v = _solve_numpy(grid[a, :, block_perm_u[a], :])
                rows.append(torch.from_numpy(perm))
                value += v
            within_u.append(torch.stack(rows))  # (H, m)
        if value >= bound - 1e-9 * abs(bound):
            block_perm_t = torch.from_numpy(block_perm_u)
            return [block_permutation(block_perm_t, within) for within in within_u], value
    pair_scores = np.zeros((blocks, blocks))
    pair_perms: list[list[list[torch.Tensor]]] = []
    for grid in grids:
        perms_g = [[torch.empty(0, dtype=torch.int64)] * blocks for _ in range(blocks)]
        for a in range(blocks):
            for h in range(blocks):
                perm, value = _solve_numpy(grid[a, :, h, :])
                perms_g[a][h] = torch.from_numpy(perm)
                pair_scores[a, h] += value
        pair_perms.append(perms_g)
    block_perm, value = solve_assignment(torch.from_numpy(pair_scores))
    perms = []
    for perms_g in pair_perms:
        within = torch.stack([perms_g[a][int(block_perm[a])] for a in range(blocks)])  # (H, m)
        perms.append(block_permutation(block_perm, within))
    return perms, value
