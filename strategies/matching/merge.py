"""Match many clients into one global frame and merge them by the PFNM posterior (multi-task aware).

Procedure (PFNM block-coordinate loop, Yurochkin et al., ICML 2019, section 3; MergeMany, Ainsworth et al.,
ICLR 2023, algorithm 3; FedMA's matched averaging, Wang et al., ICLR 2020):

1. Reference frame: the previous global model when given (never permuted, so server-optimizer state stays
   valid), else the client with the most samples (ties: first id in sorted order).
2. Initial pass, clients in a seeded random order: align each to the weighted mean of the reference and the
   clients aligned so far (cost weights from tensor scales).
3. Leave-one-out passes (``iterations``), each in a fresh seeded order: re-estimate the per-tensor noise
   variances, then re-align every client to the posterior of all the others (prior included), starting from
   its current permutations. Stop early when no permutation changes.
4. With ``alignment: sinkhorn``: replace every re-aligned client's hard alignment by its soft (optimal
   transport) alignment to the posterior of the others (:mod:`strategies.matching.soft`), all from the same
   hard-aligned posterior, so the result still does not depend on the order.
5. Return the posterior mean of every tensor over the clients that trained it.

Multi-task: encoder tensors pool every client weighted by ``num_examples``; a task head's tensors pool only
the clients that trained that task, weighted by their sample count for that task, and a head no client
trained is returned as it is in the reference. Integer buffers (BatchNorm ``num_batches_tracked``) are taken
from the reference. The result does not depend on the order of ``clients`` (ids are sorted before the
seeded shuffle).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from mtmedformer.config.federated import MatchingConfig
from strategies.matching.align import AlignResult, align
from strategies.matching.diagnostics import MergeDiagnostics, collect_diagnostics
from strategies.matching.errors import MatchingError
from strategies.matching.permute import Perms, apply_permutations, identity_permutations
from strategies.matching.posterior import (
    empirical_noise_variances,
    match_weight,
    prior_precision,
    relative_weights,
    server_step,
    tensor_scales,
)
from strategies.matching.soft import apply_soft_maps, off_diagonal_mass, soft_maps
from strategies.matching.spec import PermutationSpec

logger = logging.getLogger(__name__)

ENCODER = "encoder"
"""Pool name of the shared tensors (every other pool is a task name)."""


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply.

    Attributes
    ----------
    state
        Its state dict (torch tensors or numpy arrays), with the spec's keys.
    num_examples
        Samples it trained on (weights the encoder).
    task_counts
        Task -> samples annotated for it that the client used; a task absent or at 0 was not trained and that
        head of ``state`` is ignored.
    """

    state: Mapping[str, torch.Tensor | np.ndarray]
    num_examples: int
    task_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass
class MergeResult:
    """Output of :func:`match_and_merge`.

    Attributes
    ----------
    state_dict
        The merged model in the reference frame; keys, shapes and dtypes of the inputs.
    diagnostics
        Per-group moved fractions, objective gains, sweeps, timings, noise variances, server steps.
    permutations
        Client id -> the permutations that took it into the global frame.
    """

    state_dict: dict[str, torch.Tensor]
    diagnostics: MergeDiagnostics
    permutations: dict[str, Perms]


class _Sums:
    """Natural parameters per tensor: ``num = p theta_prev + sum_j rho_j v_j`` (float64), ``den = p + sum_j rho_j``."""

    def __init__(self, names: list[str]) -> None:
        self.num: dict[str, torch.Tensor] = {}
        self.den = dict.fromkeys(names, 0.0)

    def add(self, state: Mapping[str, torch.Tensor], weights: Mapping[str, float], sign: float = 1.0) -> None:
        for name, w in weights.items():
            if w <= 0:
                continue
            if name in self.num:  # one fused float64 multiply-add, no float64 copy of the client tensor
                self.num[name].add_(state[name], alpha=sign * w)
            else:
                self.num[name] = state[name].to(torch.float64, copy=True).mul_(sign * w)  # never alias the input
            self.den[name] += sign * w

    def mean(
        self,
        name: str,
        without: tuple[Mapping[str, torch.Tensor], Mapping[str, float]] | None = None,
        den: float | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> torch.Tensor:
        """``num / den``; ``without=(state, rho)`` removes one client's term (``den`` then given by the caller)."""
        out = self.num[name].to(dtype, copy=True)  # one conversion, then in place in ``dtype``
        if without is not None and without[1].get(name, 0.0) > 0:
            out.sub_(without[0][name], alpha=without[1][name])
        return out.div_(self.den[name] if den is None else den)


def _to_tensors(state: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(value).detach().cpu() for name, value in state.items()}


def _check_inputs(
    clients: Mapping[str, dict[str, torch.Tensor]], spec: PermutationSpec, reference: Mapping[str, torch.Tensor]
) -> None:
    for cid, state in clients.items():
        spec.check_state(state, origin=f"client '{cid}'")
        for name, value in state.items():
            ref = reference[name]
            if value.shape != ref.shape or value.is_floating_point() != ref.is_floating_point():
                raise MatchingError(
                    f"client '{cid}': '{name}' is {tuple(value.shape)} {value.dtype}, expected "
                    f"{tuple(ref.shape)} {ref.dtype}: the client runs a different model config"
                )
            # a sum is NaN/Inf when any entry is; the full check runs only then (overflow of the sum).
            if value.is_floating_point() and not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
                raise MatchingError(f"client '{cid}': '{name}' holds NaN/Inf values; exclude this client")


def _pool_weights(
    updates: Mapping[str, ClientUpdate], spec: PermutationSpec, ids: list[str]
) -> dict[str, dict[str, float]]:
    """Pool -> client -> rho (clients outside a pool are absent)."""
    known = set(spec.tasks)
    for cid in ids:
        extra = sorted(t for t, n in updates[cid].task_counts.items() if n > 0 and t not in known)
        if extra and known:
            raise MatchingError(
                f"client '{cid}' reports training tasks {extra} that the model has no head for (heads: {sorted(known)})"
            )
    pools = {ENCODER: dict(zip(ids, relative_weights([updates[c].num_examples for c in ids]), strict=True))}
    for task in spec.tasks:
        members = [c for c in ids if updates[c].task_counts.get(task, 0) > 0]
        if members:
            rho = relative_weights([updates[c].task_counts[task] for c in members])
            pools[task] = dict(zip(members, rho, strict=True))
    return pools


def match_and_merge(
    clients: Mapping[str, ClientUpdate],
    spec: PermutationSpec,
    previous: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    config: MatchingConfig | None = None,
) -> MergeResult:
    """Align every client's hidden units to a common frame and return their PFNM posterior mean.

    Parameters
    ----------
    clients
        Client id -> its update. Ids fix the (seeded) processing order, so the result does not depend on the
        mapping's order.
    spec
        Permutation spec of the model (e.g. from :func:`strategies.matching.model_spec.build_spec`).
    previous
        The previous global model: reference frame and prior centre. None = use the largest client as the
        frame and no prior (first round or one-shot merging).
    config
        Settings; default :class:`~mtmedformer.config.federated.MatchingConfig()`.

    Returns
    -------
    MergeResult
        Merged state dict in the reference frame, diagnostics and per-client permutations.

    Raises
    ------
    MatchingError
        If there are no clients, a state dict does not fit the spec or the others (keys, shapes), holds
        NaN/Inf, a sample count is not positive, or a client reports a task the model has no head for.
    """
    config = config or MatchingConfig()
    if not clients:
        raise MatchingError("no client updates to merge")
    began = time.perf_counter()
    ids = sorted(clients)
    states = {cid: _to_tensors(clients[cid].state) for cid in ids}
    prev = _to_tensors(previous) if previous is not None else None
    if prev is not None:
        spec.check_state(prev, origin="previous global model")
    pools = _pool_weights(clients, spec, ids)
    ref_id = None if prev is not None else max(ids, key=lambda c: (clients[c].num_examples, -ids.index(c)))
    reference = prev if prev is not None else states[ref_id]
    _check_inputs(states, spec, reference)
    if prev is None:
        logger.info("no previous global model: client '%s' (most samples) is the reference frame", ref_id)
    if config.iterations == 0 and len(ids) > 1:
        logger.warning("matching iterations=0: clients are aligned once, greedily, without leave-one-out passes")

    matcher = _Matcher(spec, config, states, pools, prev, ref_id, reference)
    matcher.initial_pass()
    iterations = 0
    for _ in range(config.iterations if matcher.others else 0):
        iterations += 1
        if not matcher.leave_one_out_pass():
            break
    soft = matcher.soften() if config.alignment == "sinkhorn" else {}
    merged = matcher.posterior_state()

    prior_variance = config.prior_variance if prev is not None else math.inf
    etas = {pool: server_step(sum(members.values()), prior_variance) for pool, members in pools.items()}
    diagnostics = collect_diagnostics(
        spec, matcher.perms, matcher.results, reference="previous" if ref_id is None else ref_id,
        iterations=iterations, noise=matcher.noise, server_steps=etas, seconds=time.perf_counter() - began,
        soft_offdiagonal=soft,
    )
    logger.info("matched %d clients in %.2f s (%d leave-one-out passes)", len(ids), diagnostics.seconds, iterations)
    return MergeResult(merged, diagnostics, matcher.perms)


class _Matcher:
    """The clients' working copies, permutations and the posterior sums of one :func:`match_and_merge` call."""

    def __init__(
        self,
        spec: PermutationSpec,
        config: MatchingConfig,
        states: Mapping[str, Mapping[str, torch.Tensor]],
        pools: Mapping[str, Mapping[str, float]],
        prev: Mapping[str, torch.Tensor] | None,
        ref_id: str | None,
        reference: Mapping[str, torch.Tensor],
    ) -> None:
        self.spec, self.config, self.prev, self.ref_id, self.reference = spec, config, prev, ref_id, reference
        ids = list(states)
        self.names = [n for n in spec.axes if reference[n].is_floating_point()]
        all64 = all(s[n].dtype == torch.float64 for s in states.values() for n in self.names)
        dtype = torch.float64 if all64 else torch.float32  # GEMM precision
        self.dtype = dtype
        self.work = {cid: {n: s[n].to(dtype) for n in self.names} for cid, s in states.items()}
        # rho[cid][tensor]: the client's relative weight in the tensor's pool (0 = did not train it).
        self.rho = {
            cid: {n: pools.get(spec.task_of(n) or ENCODER, {}).get(cid, 0.0) for n in self.names} for cid in ids
        }
        self.scales = tensor_scales({n: reference[n] for n in self.names})
        self.noise = dict(self.scales)
        self.prior = prior_precision(config.prior_variance) if prev is not None else 0.0
        self.rng = random.Random(config.seed)
        self.others = [cid for cid in ids if cid != ref_id]  # the reference client is never re-aligned
        self.perms: dict[str, Perms] = {cid: identity_permutations(spec) for cid in ids}
        self.aligned: dict[str, dict[str, torch.Tensor]] = dict(self.work)
        self.results: dict[str, list[AlignResult]] = {cid: [] for cid in ids}

    def _order(self) -> list[str]:
        order = self.others[:]
        self.rng.shuffle(order)
        return order

    def initial_pass(self) -> None:
        """Align each client to the reference (weight 1 if it is the previous global) plus the clients so far."""
        sums = _Sums(self.names)
        if self.prev is not None:
            sums.add({n: self.prev[n] for n in self.names}, dict.fromkeys(self.names, 1.0))
        else:
            sums.add(self.work[self.ref_id], self.rho[self.ref_id])
        for cid in self._order():
            targets = {n: sums.mean(n, dtype=self.dtype) for n in self.names if sums.den[n] > 0}
            weights = {n: match_weight(self.rho[cid][n], sums.den[n], self.scales[n]) for n in targets}
            result = align(self.work[cid], targets, self.spec, weights, max_sweeps=self.config.max_sweeps)
            self.results[cid].append(result)
            self.perms[cid] = result.perms
            self.aligned[cid] = apply_permutations(self.work[cid], self.spec, result.perms)
            sums.add(self.aligned[cid], self.rho[cid])

    def leave_one_out_pass(self) -> bool:
        """Re-align every client to the posterior of all the others; return whether a permutation changed."""
        sums = _posterior_sums(self.names, self.aligned, self.rho, self.prev, self.prior)
        if self.config.noise == "empirical":
            self.noise = empirical_noise_variances(
                list(self.aligned.values()), list(self.rho.values()), self.scales, self.config.noise_floor
            )
        changed = False
        for cid in self._order():
            rho = self.rho[cid]
            targets, weights = self._targets(sums, cid)
            if not any(w > 0 for w in weights.values()):
                continue  # nothing to match against (a single client and no prior)
            result = align(
                self.work[cid], targets, self.spec, weights, init=self.perms[cid], max_sweeps=self.config.max_sweeps
            )
            self.results[cid].append(result)
            if any(not torch.equal(result.perms[g], self.perms[cid][g]) for g in result.perms):
                changed = True
                new = apply_permutations(self.work[cid], self.spec, result.perms)
                sums.add(self.aligned[cid], rho, sign=-1.0)
                sums.add(new, rho)
                self.perms[cid], self.aligned[cid] = result.perms, new
        return changed

    def _targets(self, sums: _Sums, cid: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """The posterior of everyone but ``cid`` (prior included) and the match weights against it."""
        rho = self.rho[cid]
        rest = {n: sums.den[n] - rho[n] for n in self.names}  # prior + the other clients' rho
        targets = {
            n: sums.mean(n, (self.aligned[cid], rho), rest[n], dtype=self.dtype) for n in self.names if rest[n] > 1e-12
        }
        return targets, {n: match_weight(rho[n], rest[n], self.noise[n]) for n in targets}

    def soften(self) -> dict[str, float]:
        """Replace each re-aligned client's hard alignment by its soft one; return group -> mean off-diagonal mass.

        Every client's maps are computed from the same hard-aligned posterior before any client changes.
        """
        sums = _posterior_sums(self.names, self.aligned, self.rho, self.prev, self.prior)
        softened: dict[str, dict[str, torch.Tensor]] = {}
        mass: dict[str, list[float]] = {}
        for cid in self.others:
            targets, weights = self._targets(sums, cid)
            if not any(w > 0 for w in weights.values()):
                continue
            maps = soft_maps(
                self.aligned[cid], targets, self.spec, weights,
                self.config.sinkhorn_epsilon, self.config.sinkhorn_iterations,
            )
            softened[cid] = apply_soft_maps(self.aligned[cid], self.spec, maps)
            for group, soft in maps.items():
                mass.setdefault(group, []).append(off_diagonal_mass(soft))
        self.aligned.update(softened)
        return {group: sum(values) / len(values) for group, values in mass.items()}

    def posterior_state(self) -> dict[str, torch.Tensor]:
        """Posterior mean of every tensor some client trained; the reference's value elsewhere."""
        sums = _posterior_sums(self.names, self.aligned, self.rho, self.prev, self.prior)
        merged: dict[str, torch.Tensor] = {}
        for name, ref in self.reference.items():  # the reference's key order (state-dict order)
            if name in sums.num and sums.den[name] > self.prior:  # at least one client trained this tensor
                merged[name] = sums.mean(name).to(ref.dtype)
            else:
                merged[name] = ref.clone()
        return merged


def _posterior_sums(
    names: list[str],
    aligned: Mapping[str, Mapping[str, torch.Tensor]],
    rho: Mapping[str, Mapping[str, float]],
    prev: Mapping[str, torch.Tensor] | None,
    p: float,
) -> _Sums:
    """Sums of the posterior over all clients (fresh, so incremental updates never accumulate rounding)."""
    sums = _Sums(names)
    if prev is not None and p > 0:
        sums.add({n: prev[n] for n in names}, dict.fromkeys(names, p))
    for cid in sorted(aligned):
        sums.add(aligned[cid], rho[cid])
    return sums
