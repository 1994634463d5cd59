"""Align one client's state dict to a target by coordinate ascent over permutation groups.

Objective (weight matching, Ainsworth et al., ICLR 2023, eq. 2; the fixed-width PFNM cost, Yurochkin et
al., ICML 2019, reduces to it): ``J(P) = sum_t w_t <target_t, P(client)_t>`` over the tensors ``t`` with a
weight ``w_t > 0``. Maximising over one group with all others fixed is a linear assignment whose score
matrix is a sum of matrix products, one per place the group appears; a tie (attention heads) is solved
jointly and exactly by :func:`~strategies.matching.assignment.solve_block_assignment`. Every accepted step
increases ``J``, so the ascent never decreases the objective and stops when no permutation changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from strategies.matching.assignment import solve_assignment, solve_block_assignment, unit_rows
from strategies.matching.permute import Perms, apply_permutations, identity_permutations, permute_tensor
from strategies.matching.spec import Occurrence, PermutationSpec, SolveItem

logger = logging.getLogger(__name__)

SMALL_FEATURES = 64  # occurrences with fewer features per unit (biases, norms) share one concatenated GEMM


@dataclass
class AlignResult:
    """Outcome of :func:`align`.

    Attributes
    ----------
    perms
        Group -> permutation taking the client into the target's frame.
    objective_identity
        ``J`` of the unpermuted client.
    objective
        ``J`` at the start of the ascent, then after every sweep (non-decreasing).
    sweeps
        Sweeps run (the last one changed nothing unless ``max_sweeps`` was reached).
    start
        ``"features"`` (initialised from features that need no other permutation), ``"identity"`` (that
        initialisation scored below the identity) or ``"given"``.
    seconds
        Solve item -> seconds spent building its scores and solving its assignments.
    """

    perms: Perms
    objective_identity: float
    objective: list[float]
    sweeps: int
    start: str
    seconds: dict[str, float] = field(default_factory=dict)


def alignment_objective(
    aligned: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> float:
    """``sum_t w_t <target_t, aligned_t>`` over tensors with a positive weight.

    Each inner product is a BLAS dot in the tensors' dtype (float32 rounding for float32 inputs); the sum over
    tensors is accumulated in Python floats.
    """
    total = 0.0
    for name, w in weights.items():
        if w > 0:
            a, t = aligned[name], target[name].to(aligned[name].dtype)
            total += w * float(torch.dot(t.reshape(-1), a.reshape(-1)))
    return total


class _Aligner:
    """State of one alignment: the client permuted by the current permutations, restricted to weighted tensors."""

    def __init__(
        self,
        client: Mapping[str, torch.Tensor],
        target: Mapping[str, torch.Tensor],
        spec: PermutationSpec,
        weights: Mapping[str, float],
        perms: Perms,
    ) -> None:
        self.spec = spec
        self.weights = {name: float(w) for name, w in weights.items() if w > 0}
        self.target = {name: target[name].to(client[name].dtype) for name in self.weights}
        self.client = {name: client[name] for name in self.weights}
        self.perms = {group: perm.clone() for group, perm in perms.items()}
        self.current = apply_permutations(self.client, spec, self.perms)
        self._target_rows: dict[Occurrence, torch.Tensor] = {}  # target rows (views), fixed during the ascent
        self.version = dict.fromkeys(spec.group_sizes, 0)  # bumped when a group's permutation changes
        self.stamps: dict[str, tuple[int, ...]] = {}
        self._neighbours: dict[str, frozenset[str]] = {}
        self.rtol = 1e-10 if all(t.dtype == torch.float64 for t in self.current.values()) else 1e-6

    def objective(self) -> float:
        return alignment_objective(self.current, self.target, self.weights)

    def similarity(self, group: str, solved: set[str] | None) -> torch.Tensor | None:
        """Scores ``(n, n)`` of placing current unit k at target position i; None without any feature.

        With ``solved`` set, only places whose other axes carry solved groups (or none) contribute.
        Occurrences with few features per unit (biases, norms) go into one concatenated GEMM;
        the others are accumulated in place with ``addmm_``.
        """
        sim = None
        small_t, small_c = [], []
        for occ in self.spec.occurrences[group]:
            w = self.weights.get(occ.name)
            if w is None:
                continue
            if solved is not None and not occ.others <= solved:
                continue
            if occ not in self._target_rows:
                self._target_rows[occ] = unit_rows(self.target[occ.name], occ)  # (n, features), a view
            target_rows = self._target_rows[occ]
            client_rows = unit_rows(self.current[occ.name], occ)  # (n, features)
            if target_rows.shape[1] < SMALL_FEATURES:
                small_t.append(target_rows * w)
                small_c.append(client_rows)
                continue
            # The tensor's weight goes into the GEMM's alpha: no weighted copy of the target rows.
            if sim is None:
                sim = torch.addmm(target_rows.new_zeros(()), target_rows, client_rows.T, beta=0, alpha=w)  # (n, n)
            else:
                sim.addmm_(target_rows, client_rows.T, alpha=w)
        if small_t:
            t, c = torch.cat(small_t, dim=1), torch.cat(small_c, dim=1)
            if sim is None:
                sim = t @ c.T
            else:
                sim.addmm_(t, c.T)
        return sim

    def neighbours(self, item: SolveItem) -> frozenset[str]:
        """Groups whose permutation changes this item's scores."""
        if item.name not in self._neighbours:
            self._neighbours[item.name] = frozenset(
                g for group in item.groups for occ in self.spec.occurrences[group] for g in occ.others
            ) - set(item.groups)
        return self._neighbours[item.name]

    def complete(self, item: SolveItem, solved: set[str] | None) -> bool:
        """Whether a restricted solve used every feature of the item."""
        return solved is None or all(
            occ.others <= solved for group in item.groups for occ in self.spec.occurrences[group]
        )

    def step(self, item: SolveItem, solved: set[str] | None = None) -> float | None:
        """Re-solve one item given the others.

        Returns the gain of the (full or, with ``solved``, restricted) objective: 0.0 when nothing changed,
        None when the item had no features.
        """
        stamp = tuple(self.version[g] for g in sorted(self.neighbours(item)))
        if self.stamps.get(item.name) == stamp:
            return 0.0  # exact skip: nothing this item depends on changed since its last complete solve
        sims = [self.similarity(group, solved) for group in item.groups]
        if all(sim is None for sim in sims):
            return None
        if self.complete(item, solved):
            self.stamps[item.name] = stamp
        sims = [
            torch.zeros(self.spec.group_sizes[g], self.spec.group_sizes[g], dtype=torch.float64) if s is None else s
            for g, s in zip(item.groups, sims, strict=True)
        ]
        if item.tie is None:
            rel, best = solve_assignment(sims[0])
            relative = [rel]
        else:
            relative, best = solve_block_assignment(sims, item.tie.blocks)
        now = sum(float(sim.diagonal().sum()) for sim in sims)
        # Accept only a strict gain, so ties and rounding noise never make the ascent cycle.
        if best - now <= self.rtol * (abs(best) + abs(now)) + 1e-30:
            return 0.0
        for group, rel in zip(item.groups, relative, strict=True):
            self.version[group] += 1
            self.perms[group] = self.perms[group][rel]
            for occ_name in {occ.name for occ in self.spec.occurrences[group] if occ.name in self.current}:
                self.current[occ_name] = permute_tensor(self.current[occ_name], self.spec.axes[occ_name], {group: rel})
        return best - now


def group_scores(
    client: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """Each group's ``(n, n)`` scores of the client as it is: ``S[i, k]`` scores client unit ``k`` at target unit ``i``.

    The same weighted matrix products the ascent solves (all other groups as they are); groups without a
    weighted tensor are absent. For a client that :func:`align` has already permuted, the identity maximises
    every one of them.
    """
    state = _Aligner(client, target, spec, weights, identity_permutations(spec))
    scores = {}
    for group in spec.group_sizes:
        sim = state.similarity(group, None)
        if sim is not None:
            scores[group] = sim
    return scores


def align(
    client: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    spec: PermutationSpec,
    weights: Mapping[str, float],
    *,
    init: Perms | None = None,
    max_sweeps: int = 10,
) -> AlignResult:
    """Find permutations of ``client`` that maximise its weighted inner product with ``target``.

    Parameters
    ----------
    client, target
        State dicts in one floating dtype (the GEMM precision); only keys with a positive weight are read.
    spec
        Permutation spec of both.
    weights
        Key -> weight ``w_t >= 0`` of that tensor's inner product (PFNM precision factor, see
        :mod:`strategies.matching.posterior`); keys left out or with weight 0 are ignored.
    init
        Starting permutations (e.g. from a previous alignment). Default: initialise every group in solve
        order from the tensors whose other groups are already initialised (the residual stream first, from
        patch embedding, class/position embeddings, norms and biases), then keep that start only if it scores
        above the identity.
    max_sweeps
        Cap on full sweeps over the groups. Default 10.

    Returns
    -------
    AlignResult
        Permutations and the objective trace.

    Raises
    ------
    ValueError
        If ``max_sweeps < 1`` or a similarity matrix is not finite.
    """
    if max_sweeps < 1:
        raise ValueError(f"max_sweeps must be >= 1, got {max_sweeps}")
    seconds = {item.name: 0.0 for item in spec.solve_items}
    identity = identity_permutations(spec)
    objective_identity = alignment_objective(client, target, weights)
    state = _Aligner(client, target, spec, weights, identity if init is None else init)
    start = "given"
    if init is None:
        solved: set[str] = set()
        for item in spec.solve_items:
            began = time.perf_counter()
            if state.step(item, solved) is not None:
                solved.update(item.groups)
            seconds[item.name] += time.perf_counter() - began
        start = "features"
        if state.objective() < objective_identity:
            state = _Aligner(client, target, spec, weights, identity)
            start = "identity"
    # Each accepted step raises J by exactly its assignment gain (J is linear in one group's permutation), so
    # the trace is tracked from the gains; the final value is recomputed exactly.
    trace = [state.objective()]
    sweeps = 0
    for _ in range(max_sweeps):
        sweeps += 1
        gain = 0.0
        for item in spec.solve_items:
            began = time.perf_counter()
            gain += state.step(item) or 0.0
            seconds[item.name] += time.perf_counter() - began
        trace.append(trace[-1] + gain)
        if gain == 0.0:
            break
    else:
        logger.info("alignment stopped at max_sweeps=%d with permutations still changing", max_sweeps)
    if sweeps > 1:
        trace[-1] = state.objective()
    return AlignResult(state.perms, objective_identity, trace, sweeps, start, seconds)
