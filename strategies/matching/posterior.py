"""PFNM posterior of matched units with per-tensor noise variances and a prior centred on the global model.

Model (Yurochkin et al., "Bayesian Nonparametric Federated Learning of Neural Networks", ICML 2019, with the
per-tensor noise of SPAHM, Yurochkin et al., NeurIPS 2019): a global entry ``theta`` of tensor ``t`` has prior
``N(theta_prev, sigma0^2 sigma_t^2)``; client ``j`` observes it (after alignment) as
``v_j ~ N(theta, sigma_t^2 / rho_j)`` with ``rho_j = n_j / mean(n)``, i.e. precision
``s_j = rho_j / sigma_t^2``. The prior variance is expressed in units of each tensor's noise variance, so the
prior weighs like ``1 / sigma0^2`` average clients in every tensor whatever its scale (LayerNorm weights near
1, linear weights near 0.02). The posterior mean (PFNM Proposition 1) is

    theta_hat = (theta_prev / sigma0^2 + sum_j rho_j v_j) / (1 / sigma0^2 + sum_j rho_j)
              = theta_prev + eta (w_hat - theta_prev),   eta = sum_j rho_j / (1 / sigma0^2 + sum_j rho_j),

with ``w_hat`` the ``rho``-weighted average: a damped server step. ``sigma0^2 = inf`` gives ``w_hat``
(FedAvg of the aligned clients). The noise variances only weigh tensors against each other in the matching
cost (:func:`match_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from strategies.matching.errors import MatchingError


def relative_weights(counts: Sequence[float]) -> list[float]:
    """``rho_j = n_j / mean(n)`` (they sum to the number of clients).

    Raises
    ------
    MatchingError
        If there are no counts or one is not a positive finite number.
    """
    if not counts:
        raise MatchingError("no sample counts to weight")
    bad = [n for n in counts if not (math.isfinite(n) and n > 0)]
    if bad:
        raise MatchingError(f"sample counts must be positive, got {list(counts)}; drop clients that trained on nothing")
    mean = sum(counts) / len(counts)
    return [n / mean for n in counts]


def prior_precision(prior_variance: float) -> float:
    """``1 / sigma0^2`` in units of ``1 / sigma_t^2`` (0 for an infinite variance: no prior).

    Raises
    ------
    MatchingError
        If ``prior_variance`` is not > 0.
    """
    if not prior_variance > 0:
        raise MatchingError(f"prior_variance must be > 0 (inf = no prior), got {prior_variance}")
    return 0.0 if math.isinf(prior_variance) else 1.0 / prior_variance


def server_step(total_rho: float, prior_variance: float) -> float:
    """``eta = sum(rho) / (1 / sigma0^2 + sum(rho))``, the fraction of the way from ``theta_prev`` to ``w_hat``."""
    p = prior_precision(prior_variance)
    return total_rho / (p + total_rho) if total_rho > 0 else 0.0


def posterior_mean(
    values: Sequence[torch.Tensor],
    rho: Sequence[float],
    prior: torch.Tensor | None = None,
    prior_variance: float = math.inf,
) -> torch.Tensor:
    """Posterior mean of one tensor from aligned client values (float64).

    Parameters
    ----------
    values
        Client tensors already in the global frame, all of one shape.
    rho
        Their relative weights ``rho_j``.
    prior
        ``theta_prev``, the previous global tensor; None = no prior.
    prior_variance
        ``sigma0^2`` in units of the tensor's noise variance. Default inf (no damping).

    Returns
    -------
    torch.Tensor
        ``(p theta_prev + sum rho_j v_j) / (p + sum rho_j)`` with ``p = 1 / sigma0^2`` (0 without prior).

    Raises
    ------
    MatchingError
        If there is neither a client value nor a prior, or lengths differ.
    """
    if len(values) != len(rho):
        raise MatchingError(f"{len(values)} values but {len(rho)} weights")
    p = prior_precision(prior_variance) if prior is not None else 0.0
    if not values and p == 0:
        raise MatchingError("posterior of a tensor with neither client values nor a prior")
    num = sum((r * v.double() for r, v in zip(rho, values, strict=True)), torch.zeros((), dtype=torch.float64))
    den = sum(rho)
    if p > 0:
        num = num + p * prior.double()
        den += p
    return num / den


def match_weight(rho_j: float, rest: float, noise_variance: float) -> float:
    """Weight of one tensor in client ``j``'s matching cost against the posterior of the others.

    In PFNM's fixed-width cost the only assignment-dependent term is
    ``2 s_j <v_j, G> / (s_j + S)`` with ``G`` and ``S`` the others' natural mean and precision; with
    ``s_j = rho_j / sigma_t^2``, ``S = R / sigma_t^2`` and ``G = S * mean_others`` this is
    ``(2 / sigma_t^2) * rho_j R / (rho_j + R) * <v_j, mean_others>``.

    Parameters
    ----------
    rho_j
        The client's relative weight for this tensor.
    rest
        ``R``: prior precision plus the other clients' ``rho`` (in units of ``1 / sigma_t^2``).
    noise_variance
        ``sigma_t^2``.

    Returns
    -------
    float
        ``rho_j R / ((rho_j + R) sigma_t^2)`` (the constant factor 2 dropped); 0 when ``R`` or ``rho_j`` is 0.
    """
    if rest <= 0 or rho_j <= 0:
        return 0.0
    return rho_j * rest / ((rho_j + rest) * noise_variance)


# A tensor's scale is floored at this fraction of the mean scale over all tensors. A freshly initialised
# class token (mean square ~1e-12) would otherwise weigh ~1e8 times more than every other tensor in the
# matching cost, and a few local steps of noise in it would decide the residual-stream permutation.
SCALE_FLOOR = 1e-4


def tensor_scales(reference: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean square of every floating tensor of ``reference``, floored at ``SCALE_FLOOR`` x the mean over tensors.

    An all-zero tensor gets the mean over all tensors.
    """
    squares = {name: float(torch.mean(t.double() ** 2)) for name, t in reference.items() if t.is_floating_point()}
    positive = [v for v in squares.values() if v > 0]
    fallback = sum(positive) / len(positive) if positive else 1.0
    return {name: max(v, SCALE_FLOOR * fallback) if v > 0 else fallback for name, v in squares.items()}


def empirical_noise_variances(
    aligned: Sequence[Mapping[str, torch.Tensor]],
    rho: Sequence[Mapping[str, float]],
    scales: Mapping[str, float],
    floor: float,
) -> dict[str, float]:
    """Empirical-Bayes noise variance of every tensor: weighted spread of the aligned clients around their mean.

    ``sigma_t^2 = sum_j rho_jt ||v_jt - m_t||^2 / (numel_t sum_j rho_jt)`` with ``m_t`` the ``rho``-weighted
    mean, floored at ``floor * scales[t]`` (a tensor all clients agree on would otherwise get an infinite
    precision); a tensor seen by fewer than two clients gets the floor.

    Parameters
    ----------
    aligned
        Client states in the global frame.
    rho
        Per client, tensor -> relative weight (0 or missing = the client did not train that tensor).
    scales
        Tensor -> mean square (see :func:`tensor_scales`); defines which tensors are estimated.
    floor
        Relative floor, e.g. 1e-4.
    """
    out = {}
    for name, scale in scales.items():
        members = [(r[name], a[name].double()) for r, a in zip(rho, aligned, strict=True) if r.get(name, 0) > 0]
        variance = 0.0
        if len(members) > 1:
            total = sum(r for r, _ in members)
            mean = sum(r * v for r, v in members) / total
            variance = float(sum(r * torch.mean((v - mean) ** 2) for r, v in members) / total)
        out[name] = max(variance, floor * scale)
    return out
