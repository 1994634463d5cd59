"""Matching with growth: growable groups may open new global units (PFNM's nonparametric part, design section 7).

Procedure of :func:`grow_and_merge`:

1. Every client (configured width ``L_g``) is scattered into the global widths ``W_g`` at the units of the
   slice it was sent (its index map; a default slice without one), zeros elsewhere.
2. The fixed-width matching (:func:`~strategies.matching.merge.match_and_merge`) aligns these padded clients
   to the previous global model: this fixes the frames of the groups that never grow (residual stream,
   heads, within-head units, decoder outputs) and gives a starting assignment of the growable units.
3. Per growable group, PFNM's block-coordinate loop (:func:`~strategies.matching.grow_assign.assign_with_growth`)
   re-assigns each client's units to existing or new global units with the full cost of design section 4,
   with at most ``growth_cap * L_g`` units. Noise variances come from the spread around the starting
   assignment; a new unit's prior is zero-mean with the tensor's mean square as variance (a typical unit).
4. Posterior: a unit's own parameters (rows of its layer, bias, norm parameters and statistics) are the
   posterior mean over the clients holding it; its *outgoing* weights (the input axis of the next layer) are
   averaged with zero-fill over all clients of the pool, so the grown layer's output is the weighted mean of
   the clients' layer outputs whenever joined units share their incoming weights. Units of the previous model
   that no client holds this round keep their previous values.

The previous global model is never permuted; new units are appended after its units.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import torch

from strategies.matching.assignment import unit_rows
from strategies.matching.errors import MatchingError
from strategies.matching.grow_assign import GroupData, assign_with_growth
from strategies.matching.merge import (
    ENCODER,
    ClientUpdate,
    MatchingConfig,
    MergeResult,
    _pool_weights,
    _to_tensors,
    match_and_merge,
)
from strategies.matching.permute import apply_permutations
from strategies.matching.posterior import prior_precision, tensor_scales
from strategies.matching.spec import PermutationSpec
from strategies.matching.widths import (
    IndexMaps,
    check_index_maps,
    default_index_maps,
    growable_axes,
    resized_spec,
    scatter_units,
    widths_of,
)


def grow_and_merge(
    clients: Mapping[str, ClientUpdate],
    spec: PermutationSpec,
    previous: Mapping[str, torch.Tensor | np.ndarray] | None,
    config: MatchingConfig,
    index_maps: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> MergeResult:
    """Match and merge clients of the configured width into a global model whose growable groups may grow.

    Parameters
    ----------
    clients
        Client id -> update at the configured width (the spec's sizes).
    spec
        Configured-width permutation spec with growable groups (:func:`strategies.matching.build_spec`).
    previous
        The previous global model, possibly grown; None = one-shot merge (the largest client is the frame).
    config
        Settings; ``gamma``, ``growth_cap``, ``iterations`` (PFNM passes, at least one) are used here.
    index_maps
        Client id -> the index maps of the slice it was sent; clients left out get
        :func:`~strategies.matching.widths.default_index_maps` of the given ones.

    Returns
    -------
    MergeResult
        The grown global state, diagnostics (``grown`` per group), the fixed-width groups' permutations, and
        every client's new index maps (``result.index_maps``).

    Raises
    ------
    MatchingError
        On inconsistent inputs (see :func:`~strategies.matching.merge.match_and_merge`), an invalid index map,
        or a previous model whose growable widths exceed what its tensors agree on.
    """
    began = time.perf_counter()
    if not clients:
        raise MatchingError("no client updates to merge")
    ids = sorted(clients)
    states = {cid: _to_tensors(clients[cid].state) for cid in ids}
    for cid in ids:
        spec.check_state(states[cid], origin=f"client '{cid}'")
    prev = _to_tensors(previous) if previous is not None else None
    widths = widths_of(prev, spec) if prev is not None else {g: spec.group_sizes[g] for g in spec.growable}
    wide = resized_spec(spec, widths)
    if prev is not None:
        wide.check_state(prev, origin="previous global model")
    known = dict(index_maps or {})
    start = {
        cid: check_index_maps(known[cid], spec, widths, f"client '{cid}'") if cid in known
        else default_index_maps(spec, widths, known)
        for cid in ids
    }
    padded = {
        cid: ClientUpdate(scatter_units(states[cid], spec, start[cid], widths), u.num_examples, u.task_counts)
        for cid, u in ((c, clients[c]) for c in ids)
    }
    fixed = match_and_merge(padded, wide, previous=prev, config=replace(config, growth=False))
    frames = {
        cid: {g: p for g, p in perms.items() if g not in spec.growable} for cid, perms in fixed.permutations.items()
    }
    aligned = {cid: apply_permutations(states[cid], spec, frames[cid]) for cid in ids}
    # Global unit of each local unit after the fixed-width alignment (position of its padded unit).
    starts = {
        cid: {g: torch.argsort(fixed.permutations[cid][g])[start[cid][g]] for g in spec.growable} for cid in ids
    }
    ref_id = None if fixed.diagnostics.reference == "previous" else fixed.diagnostics.reference
    reference = prev if prev is not None else aligned[ref_id]
    pools = _pool_weights(clients, spec, ids)
    names = [n for n in spec.axes if reference[n].is_floating_point()]
    rho = {cid: {n: pools.get(spec.task_of(n) or ENCODER, {}).get(cid, 0.0) for n in names} for cid in ids}
    grower = _Grower(spec, wide, config, aligned, rho, prev, tensor_scales({n: reference[n] for n in names}))
    maps: dict[str, IndexMaps] = {cid: {} for cid in ids}
    final_widths: dict[str, int] = {}
    rng = random.Random(config.seed)
    for group in sorted(spec.growable):
        assigned, final_widths[group] = grower.group(group, {c: starts[c][group] for c in ids}, ref_id, rng)
        for cid in ids:
            maps[cid][group] = assigned.get(cid)
        default = default_index_maps(spec, final_widths, {c: {group: a} for c, a in assigned.items()})[group]
        for cid in ids:
            if maps[cid][group] is None:  # did not train the group's task: send the most widely held units
                maps[cid][group] = default
    merged = grower.posterior(reference, maps, final_widths)
    diagnostics = replace(
        fixed.diagnostics,
        grown={g: final_widths[g] - spec.group_sizes[g] for g in sorted(spec.growable)},
        seconds=time.perf_counter() - began,
    )
    return MergeResult(merged, diagnostics, frames, maps)


class _Grower:
    """Per-group PFNM growth and the grown posterior, over clients already in the global frame."""

    def __init__(self, spec: PermutationSpec, wide: PermutationSpec, config: MatchingConfig,
                 aligned: Mapping[str, Mapping[str, torch.Tensor]], rho: Mapping[str, Mapping[str, float]],
                 prev: Mapping[str, torch.Tensor] | None, scales: Mapping[str, float]) -> None:
        self.spec, self.wide, self.config, self.aligned, self.rho, self.prev = spec, wide, config, aligned, rho, prev
        self.scales = scales
        self.prior = prior_precision(config.prior_variance) if prev is not None else 0.0
        self.where = growable_axes(spec)

    def group(self, group: str, starts: Mapping[str, torch.Tensor], ref_id: str | None,
              rng: random.Random) -> tuple[dict[str, torch.Tensor], int]:
        """Assignments of the clients that trained the group, and the group's new width."""
        pairs = [
            (occ, wocc) for occ, wocc in zip(self.spec.occurrences[group], self.wide.occurrences[group], strict=True)
            if occ.name in self.scales
        ]
        members = [c for c in sorted(self.aligned) if self.rho[c][pairs[0][0].name] > 0] if pairs else []
        width = self.wide.group_sizes[group]
        if not members:
            return {}, width
        rows = {c: [unit_rows(self.aligned[c][occ.name], occ).double() for occ, _ in pairs] for c in members}
        noise = self._noise([occ.name for occ, _ in pairs], rows, {c: starts[c] for c in members}, width)
        sizes = [part.shape[1] for part in rows[members[0]]]

        def per_feature(values: list[float]) -> torch.Tensor:
            return torch.cat([torch.full((n,), v, dtype=torch.float64) for n, v in zip(sizes, values, strict=True)])

        names = [occ.name for occ, _ in pairs]
        data = GroupData(
            signatures={c: torch.cat(rows[c], dim=1) for c in members},
            precision={c: per_feature([self.rho[c][n] / noise[n] for n in names]) for c in members},
            start={c: starts[c] for c in members},
            width=width,
            prior_rows=None if self.prev is None else torch.cat(
                [unit_rows(self.prev[wocc.name], wocc).double() for _, wocc in pairs], dim=1
            ),
            prior_precision=None if self.prev is None else per_feature([1.0 / noise[n] for n in names]),
            new_precision=per_feature([1.0 / self.scales[n] for n in names]),
            fixed=frozenset({ref_id}) if self.prev is None and ref_id in members else frozenset(),
        )
        cap = math.floor(self.config.growth_cap * self.spec.group_sizes[group] + 1e-9)
        return assign_with_growth(data, max(cap, width), self.config.gamma, self.config.iterations, rng)

    def _noise(self, names: list[str], rows: Mapping[str, list[torch.Tensor]], assign: Mapping[str, torch.Tensor],
               width: int) -> dict[str, float]:
        """Per tensor: rho-weighted mean squared deviation of client units from their unit's mean, floored."""
        out = {}
        for k, name in enumerate(names):
            total = torch.zeros(width, rows[next(iter(rows))][k].shape[1], dtype=torch.float64)
            weight = torch.zeros(width, dtype=torch.float64)
            for c, parts in rows.items():
                total[assign[c]] += self.rho[c][name] * parts[k]
                weight[assign[c]] += self.rho[c][name]
            mean = total / weight.clamp_min(1e-300)[:, None]
            spread = sum(
                self.rho[c][name] * float(((parts[k] - mean[assign[c]]) ** 2).sum()) for c, parts in rows.items()
            )
            count = sum(self.rho[c][name] * parts[k].numel() for c, parts in rows.items())
            out[name] = max(spread / count, self.config.noise_floor * self.scales[name])
        return out

    def posterior(self, reference: Mapping[str, torch.Tensor], maps: Mapping[str, IndexMaps],
                  widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """Grown posterior mean of every tensor (see the module docstring); integer buffers from ``reference``."""
        merged = {}
        for name, ref in reference.items():
            members = [c for c in sorted(self.aligned) if self.rho[c].get(name, 0.0) > 0]
            if not ref.is_floating_point() or not members:
                merged[name] = ref.clone()
                continue
            where = self.where.get(name)
            if where is None:
                num = sum(self.rho[c][name] * self.aligned[c][name].double() for c in members)
                den = sum(self.rho[c][name] for c in members)
                if self.prior > 0:
                    num, den = num + self.prior * self.prev[name].double(), den + self.prior
                merged[name] = (num / den).to(ref.dtype)
                continue
            merged[name] = self._grown(name, ref, where.axis, where.outgoing, members,
                                       {c: maps[c][where.group] for c in members}, widths[where.group])
        return merged

    def _grown(self, name: str, ref: torch.Tensor, axis: int, outgoing: bool, members: list[str],
               maps: Mapping[str, torch.Tensor], width: int) -> torch.Tensor:
        shape = [1] * ref.ndim
        shape[axis] = width
        full = list(ref.shape)
        full[axis] = width

        def place(value: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
            return torch.zeros(full, dtype=torch.float64).index_copy(axis, units, value.double())

        num = sum(self.rho[c][name] * place(self.aligned[c][name], maps[c]) for c in members)
        held = sum(torch.zeros(width, dtype=torch.float64).index_fill(0, maps[c], self.rho[c][name]) for c in members)
        prev = None
        in_prev = torch.zeros(width, dtype=torch.float64)
        if self.prev is not None:
            old = self.prev[name].shape[axis]
            prev = place(self.prev[name], torch.arange(old))
            in_prev[:old] = 1.0
        if outgoing:  # zero-fill over every client of the pool
            den = torch.full((width,), sum(self.rho[c][name] for c in members), dtype=torch.float64)
            if self.prior > 0:
                num, den = num + self.prior * prev, den + self.prior
        else:  # the unit's own parameters: posterior over the clients holding it
            den = held.clone()
            if self.prior > 0:
                num, den = num + self.prior * prev * in_prev.view(shape), den + self.prior * in_prev
        out = num / den.clamp_min(1e-300).view(shape)
        if prev is not None:  # units no client holds this round keep their previous values
            out = torch.where((held > 0).view(shape), out, prev)
        return out.to(ref.dtype)
