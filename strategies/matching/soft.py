"""Soft alignment: entropic optimal-transport maps between units, beside the hard permutations.

After the hard matching has put a client into the global frame, each group's units may still correspond to
*mixtures* of the target's units rather than to one unit each. Optimal-transport fusion (Singh & Jaggi,
NeurIPS 2020; for transformers Imfeld et al., "Transformer Fusion with Optimal Transport", ICLR 2024) replaces
the permutation by a transport map: with uniform marginals, a doubly stochastic ``(n, n)`` matrix ``M``
(rows and columns sum to 1) that maximises ``<M, S> + tau H(M)``, where ``S[i, k]`` scores client unit ``k``
at target position ``i`` and ``H`` is the entropy (Sinkhorn, Cuturi, NeurIPS 2013). Row ``i`` of an aligned
tensor is then ``sum_k M[i, k] row_k``; a permutation matrix gives back the hard alignment exactly.

How this adapts Imfeld et al. to the spec (see ``docs/bnp-matching.md``):

- Every map is computed from the *hard-aligned* client against its target, with the same weighted scores the
  coordinate ascent maximised (:func:`strategies.matching.align.group_scores`), all groups from that one
  state (the hard solution already fixed every other axis, so no layer-by-layer propagation is needed).
- One residual-stream group spans every block, so its scores already sum the evidence of every layer: the
  analogue of Imfeld et al.'s averaging of the residual maps over layers.
- Attention heads keep their hard head-to-head assignment; inside each head the q/k and the v/o units get
  their own soft map (block diagonal), as Imfeld et al.'s per-head Q/K/V maps.
- ``tau = epsilon * (max S - min S)`` per map, so ``epsilon`` is unit-free: 0 approaches the hard map, large
  values approach uniform averaging of the units.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from strategies.matching.align import group_scores
from strategies.matching.spec import PermutationSpec

SoftMaps = dict[str, torch.Tensor]
"""Group -> ``(n, n)`` doubly stochastic map; groups left out are not changed."""


def sinkhorn_map(scores: torch.Tensor, epsilon: float, iterations: int = 500, tol: float = 1e-9) -> torch.Tensor:
    """The entropic transport map with uniform marginals that maximises ``<M, scores> + tau H(M)``.

    Parameters
    ----------
    scores
        ``(n, n)``; ``scores[i, k]`` scores client unit ``k`` at target position ``i``.
    epsilon
        Regularisation relative to the spread of ``scores`` (``tau = epsilon * (max - min)``), ``> 0``.
    iterations, tol
        Cap on Sinkhorn iterations, and the largest row-sum error (from 1) at which they stop.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` float64 with every column summing to 1 and every row to 1 within ``tol`` (or what
        ``iterations`` reached). The identity when every score is equal (nothing tells the units apart).

    Raises
    ------
    ValueError
        If ``scores`` is not square or not finite, or ``epsilon <= 0``.
    """
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square, got {tuple(scores.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    s = scores.detach().to(torch.float64)
    if not torch.isfinite(s).all():
        raise ValueError("similarity matrix holds NaN/Inf: a client sent non-finite weights")
    spread = float(s.max() - s.min())
    n = s.shape[0]
    if spread <= 0.0:
        return torch.eye(n, dtype=torch.float64)
    # exp of values in [-1/epsilon, 0]: no float64 underflow for epsilon >= 1/700, so the plain scaling form
    # (two matrix-vector products per iteration) replaces the log-domain one; smaller epsilon stays in logs.
    log_k = (s - s.max()) / (epsilon * spread)  # (n, n), <= 0
    if 1.0 / epsilon > 700.0:
        return _sinkhorn_log(log_k, iterations, tol)
    kernel = log_k.exp()
    u = torch.ones(n, dtype=torch.float64)
    v = torch.ones(n, dtype=torch.float64)
    for step in range(iterations):
        u = 1.0 / (kernel @ v)  # rows sum to 1
        v = 1.0 / (kernel.T @ u)  # columns sum to 1
        if step % 10 == 9 and float((u * (kernel @ v) - 1.0).abs().max()) <= tol:
            break
    return u[:, None] * kernel * v[None, :]


def _sinkhorn_log(log_k: torch.Tensor, iterations: int, tol: float) -> torch.Tensor:
    """Log-domain Sinkhorn for kernels that would underflow (tiny epsilon)."""
    n = log_k.shape[0]
    log_u = torch.zeros(n, dtype=torch.float64)
    log_v = torch.zeros(n, dtype=torch.float64)
    for step in range(iterations):
        log_u = -torch.logsumexp(log_k + log_v[None, :], dim=1)
        log_v = -torch.logsumexp(log_k + log_u[:, None], dim=0)
        if step % 10 == 9:
            rows = torch.logsumexp(log_k + log_u[:, None] + log_v[None, :], dim=1).exp()
            if float((rows - 1.0).abs().max()) <= tol:
                break
    return (log_k + log_u[:, None] + log_v[None, :]).exp()


def soft_maps(
    aligned: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    weights: Mapping[str, float],
    epsilon: float,
    iterations: int = 500,
) -> SoftMaps:
    """One soft map per group for a client already hard-aligned to ``target`` (see the module docstring).

    Parameters
    ----------
    aligned
        The client's state dict after its hard permutations (keys with a positive weight are read).
    target, weights
        What the hard alignment maximised ``sum_t w_t <target_t, aligned_t>`` against.
    epsilon, iterations
        See :func:`sinkhorn_map`.

    Returns
    -------
    SoftMaps
        Every group with at least one weighted tensor; tied (attention) groups block diagonal, one block per head.
    """
    maps: SoftMaps = {}
    for group, sim in group_scores(aligned, target, spec, weights).items():
        size = spec.group_sizes[group]
        tie = spec.tie_of.get(group)
        if tie is None:
            maps[group] = sinkhorn_map(sim, epsilon, iterations)
            continue
        m = size // tie.blocks
        blocks = [
            sinkhorn_map(sim[a * m : (a + 1) * m, a * m : (a + 1) * m], epsilon, iterations) for a in range(tie.blocks)
        ]
        maps[group] = torch.block_diag(*blocks)
    return maps


def apply_soft_maps(
    state: Mapping[str, torch.Tensor], spec: PermutationSpec, maps: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with every axis segment of a mapped group replaced by its mixture ``M @ units``.

    Parameters
    ----------
    state
        Floating tensors by key, every key in ``spec``.
    maps
        Group -> ``(n, n)`` map (a permutation matrix reproduces
        :func:`~strategies.matching.permute.apply_permutations`).

    Returns
    -------
    dict[str, torch.Tensor]
        Same keys, shapes and dtypes; tensors without a mapped axis are returned as they are. The mixing is
        computed in float64 and rounded once to the tensor's dtype.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        entries = spec.axes[name]
        if not any(e is not None and any(seg.group in maps for seg in e) for e in entries):
            out[name] = value
            continue
        mixed = value.to(torch.float64)
        for axis, entry in enumerate(entries):
            if entry is None or not any(seg.group in maps for seg in entry):
                continue
            parts, offset = [], 0
            for seg in entry:
                part = mixed.narrow(axis, offset, seg.length)
                if seg.group in maps:
                    moved = part.movedim(axis, 0)  # (units * block, *rest)
                    rest = moved.shape[1:]
                    units = moved.reshape(seg.units, -1)  # (units, block * prod(rest))
                    mixed_units = maps[seg.group].to(torch.float64) @ units
                    part = mixed_units.reshape(seg.length, *rest).movedim(0, axis)
                parts.append(part)
                offset += seg.length
            mixed = torch.cat(parts, dim=axis)
        out[name] = mixed.to(value.dtype)
    return out


def off_diagonal_mass(soft: torch.Tensor) -> float:
    """Mean mass a map moves off the hard assignment: ``1 - trace(M) / n`` (0 = the hard map itself)."""
    return 1.0 - float(soft.diagonal().sum()) / soft.shape[0]
