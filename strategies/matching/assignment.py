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
    scores = sim.detach().to(torch.float64).cpu().numpy()
    if not np.isfinite(scores).all():
        raise ValueError("similarity matrix holds NaN/Inf: a client sent non-finite weights")
    rows, cols = linear_sum_assignment(scores, maximize=True)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm), float(scores[rows, cols].sum())


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
    pair_scores = np.zeros((blocks, blocks))
    pair_perms: list[list[list[torch.Tensor]]] = []
    for sim in sims:
        m = sim.shape[0] // blocks
        grid = sim.view(blocks, m, blocks, m)  # (target block, unit, client block, unit)
        perms_g = [[torch.empty(0, dtype=torch.int64)] * blocks for _ in range(blocks)]
        for a in range(blocks):
            for h in range(blocks):
                perms_g[a][h], value = solve_assignment(grid[a, :, h, :])
                pair_scores[a, h] += value
        pair_perms.append(perms_g)
    block_perm, value = solve_assignment(torch.from_numpy(pair_scores))
    perms = []
    for perms_g in pair_perms:
        within = torch.stack([perms_g[a][int(block_perm[a])] for a in range(blocks)])  # (H, m)
        perms.append(block_permutation(block_perm, within))
    return perms, value
