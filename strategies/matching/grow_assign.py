"""PFNM assignment of one growable group with new units (Yurochkin et al., ICML 2019, eqs. 7-9; design section 4).

Every client ``j`` holds ``L`` units with signatures ``v_l`` (``D`` features: every entry carrying the unit's
index, other axes already in the global frame) and per-feature precisions ``s_d = rho_j / sigma_t(d)^2``.
Global unit ``i`` has, over the *other* clients holding it, the natural mean ``G_i = sum s v`` and precision
``S_i = sum s`` and count ``m_i``. With ``J`` observers, client ``j``'s unit ``l``

- joins unit ``i``:  ``sum_d [(s_d v_ld + G_id)^2 / (s_d + S_id) - G_id^2 / S_id] + 2 log(m_i / (J - m_i))``
- opens the k-th new unit: ``sum_d (s_d v_ld)^2 / (p0_d + s_d) - 2 log k + 2 log(gamma / J)``

(new units have prior mean 0 and precision ``p0_d``). The join scores expand into two matrix products,
``(V*V) (s^2 A)^T + V (2 s G A)^T`` with ``A = 1 / (s + S)``, plus a per-unit constant; the optimum over
``[join | new]`` columns is one ``linear_sum_assignment(maximize=True)``. At most ``cap`` units may be active.

The previous global model, when given, is one more observer (relative weight 1, like the previous model in
the first alignment pass): its units are never dropped and stay joinable, so a client keeps the units it was
sent unless another unit or a new one explains its unit better.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from strategies.matching.errors import MatchingError


@dataclass
class GroupData:
    """Inputs of one growable group (float64 tensors).

    Attributes
    ----------
    signatures
        Client id -> ``(L, D)`` unit signatures.
    precision
        Client id -> ``(D,)`` per-feature precision ``s``.
    start
        Client id -> ``(L,)`` initial global unit of each local unit (distinct, below ``width``).
    width
        Number of global units at the start (the previous global model's width, or ``L``).
    prior_rows, prior_precision
        The previous global model's ``(W_prev, D)`` unit signatures and its ``(D,)`` precision, or None.
    new_precision
        ``(D,)`` precision ``p0`` of a new unit's zero-mean prior.
    fixed
        Clients whose assignment is kept (the reference client, whose units define the frame).
    """

    signatures: Mapping[str, torch.Tensor]
    precision: Mapping[str, torch.Tensor]
    start: Mapping[str, torch.Tensor]
    width: int
    prior_rows: torch.Tensor | None
    prior_precision: torch.Tensor | None
    new_precision: torch.Tensor
    fixed: frozenset[str] = frozenset()


class _Units:
    """Natural sums ``N (C, D)``, precisions ``Q (C, D)`` and counts ``m (C,)`` of the global units."""

    def __init__(self, data: GroupData, capacity: int) -> None:
        dim = data.new_precision.numel()
        self.num = torch.zeros(capacity, dim, dtype=torch.float64)
        self.prec = torch.zeros(capacity, dim, dtype=torch.float64)
        self.count = torch.zeros(capacity, dtype=torch.int64)
        self.kept = torch.zeros(capacity, dtype=torch.bool)  # units of the previous model: never dropped
        if data.prior_rows is not None:
            n = data.prior_rows.shape[0]
            self.num[:n] += data.prior_precision * data.prior_rows
            self.prec[:n] += data.prior_precision
            self.count[:n] += 1
            self.kept[:n] = True

    def add(self, units: torch.Tensor, v: torch.Tensor, s: torch.Tensor, sign: int) -> None:
        self.num[units] += sign * (s * v)
        self.prec[units] += sign * s
        self.count[units] += sign


def _scores(v: torch.Tensor, s: torch.Tensor, units: _Units, join: torch.Tensor, observers: int,
            new_precision: torch.Tensor, n_new: int, gamma: float) -> np.ndarray:
    """``(L, |join| + n_new)`` PFNM scores of client units against existing units and ``n_new`` new ones."""
    g, q = units.num[join], units.prec[join]  # (I, D)
    a = 1.0 / (s + q)  # (I, D)
    v2 = v * v  # (L, D)
    join_scores = v2 @ (s * s * a).T + v @ (2.0 * s * g * a).T  # (L, I)
    m = units.count[join].to(torch.float64)
    join_scores += (g * g * (a - 1.0 / q)).sum(dim=1) + 2.0 * torch.log(m / (observers - m))
    new_fit = v2 @ (s * s / (new_precision + s))  # (L,)
    k = torch.arange(1, n_new + 1, dtype=torch.float64)
    new_scores = new_fit[:, None] - 2.0 * torch.log(k) + 2.0 * math.log(gamma / observers)  # (L, n_new)
    scores = torch.cat([join_scores, new_scores], dim=1).numpy()
    if not np.isfinite(scores).all():
        raise ValueError("growth score matrix holds NaN/Inf: a client sent non-finite weights")
    return scores


def assign_with_growth(data: GroupData, cap: int, gamma: float, passes: int,
                       rng: random.Random) -> tuple[dict[str, torch.Tensor], int]:
    """Re-assign every client's units to existing or new global units, PFNM's block-coordinate loop.

    Parameters
    ----------
    data
        The group's signatures, precisions and starting assignment.
    cap
        Most global units (e.g. ``2 L``); fewer units than ``L`` is never required since ``cap >= L``.
    gamma
        PFNM's Indian-buffet mass ``gamma > 0``: larger opens new units more readily.
    passes
        Passes over the clients in a seeded random order (stops early when nothing changes).
    rng
        Order of the clients.

    Returns
    -------
    assignments : dict[str, torch.Tensor]
        Client id -> ``(L,)`` global unit of each local unit, in the compacted numbering.
    width : int
        Global units: the previous model's units, then the new units some client holds, in unit-number order.

    Raises
    ------
    MatchingError
        If ``cap`` is below ``L`` or a start assignment is invalid.
    """
    ids = sorted(data.signatures)
    size = data.signatures[ids[0]].shape[0] if ids else 0
    if cap < size:
        raise MatchingError(f"growth cap {cap} is below the clients' width {size}")
    capacity = max(cap, data.width)
    units = _Units(data, capacity)
    assign = {cid: data.start[cid].clone() for cid in ids}
    for cid in ids:
        units.add(assign[cid], data.signatures[cid], data.precision[cid], +1)
    observers = len(ids) + (1 if data.prior_rows is not None else 0)
    movable = [cid for cid in ids if cid not in data.fixed]
    for _ in range(max(1, passes) if observers > 1 else 0):
        order = movable[:]
        rng.shuffle(order)
        changed = False
        for cid in order:
            v, s, old = data.signatures[cid], data.precision[cid], assign[cid]
            units.add(old, v, s, -1)
            join = torch.nonzero(units.count > 0).flatten()
            n_new = max(0, min(size, cap - join.numel()))
            scores = _scores(v, s, units, join, observers, data.new_precision, n_new, gamma)
            rows, cols = linear_sum_assignment(scores, maximize=True)
            cols = torch.from_numpy(cols[np.argsort(rows)].astype(np.int64))
            new = torch.empty(size, dtype=torch.int64)
            joined = cols < join.numel()
            new[joined] = join[cols[joined]]
            # New units are interchangeable (their scores differ by column only): number them in local order.
            free = torch.nonzero((units.count == 0) & ~units.kept).flatten()
            new[~joined] = free[: int((~joined).sum())]
            units.add(new, v, s, +1)
            if not torch.equal(new, old):
                changed = True
                assign[cid] = new
        if not changed:
            break
    keep = torch.nonzero((units.count > 0) | units.kept).flatten()  # ascending: previous units first
    renumber = torch.full((capacity,), -1, dtype=torch.int64)
    renumber[keep] = torch.arange(keep.numel())
    return {cid: renumber[a] for cid, a in assign.items()}, int(keep.numel())
