"""Grown widths of growable groups: read them from a state dict, slice a client's units out, scatter them back.

With growth (design section 7) the global model holds ``W_g >= L_g`` units of every growable group ``g``
(MLP hidden units, decoder hidden channels) while every client keeps the configured width ``L_g``. An *index
map* ``map[g]`` is an ``int64`` vector of ``L_g`` distinct global unit numbers: local unit ``l`` of the client
is global unit ``map[g][l]``. Growable groups span whole axes (one segment, block 1; checked by
:class:`~strategies.matching.spec.PermutationSpec`), so slicing is ``index_select`` and scattering is
``index_copy`` on that axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from strategies.matching.errors import MatchingError
from strategies.matching.spec import PermutationSpec, Segment

IndexMaps = dict[str, torch.Tensor]
"""Growable group -> ``(L_g,)`` int64 global unit of each local unit."""


@dataclass(frozen=True)
class GrowableAxis:
    """Where a growable group sits in one tensor: ``axis``; ``outgoing`` when that axis is the layer input."""

    group: str
    axis: int
    outgoing: bool


def growable_axes(spec: PermutationSpec) -> dict[str, GrowableAxis]:
    """Tensor name -> its growable axis, for every tensor that carries a growable group."""
    out = {}
    for name, entries in spec.axes.items():
        for axis, entry in enumerate(entries):
            if entry and entry[0].group in spec.growable:
                out[name] = GrowableAxis(entry[0].group, axis, spec.input_axes.get(name) == axis)
    return out


def widths_of(state: Mapping[str, torch.Tensor], spec: PermutationSpec) -> dict[str, int]:
    """Width of every growable group in ``state`` (a configured or grown state dict).

    Raises
    ------
    MatchingError
        If two tensors of one group disagree (the state dict is not a consistently grown model).
    """
    widths: dict[str, int] = {}
    for name, where in growable_axes(spec).items():
        if name not in state:
            continue
        width = int(state[name].shape[where.axis])
        if widths.setdefault(where.group, width) != width:
            raise MatchingError(
                f"'{name}' has {width} units of growable group '{where.group}' on axis {where.axis}, other tensors "
                f"of the group have {widths[where.group]}: the state dict is not a consistently grown model"
            )
    return widths


def resized_spec(spec: PermutationSpec, widths: Mapping[str, int]) -> PermutationSpec:
    """The spec with the sizes of the growable groups in ``widths`` replaced (for a grown global model)."""
    if all(spec.group_sizes[g] == w for g, w in widths.items()):
        return spec
    sizes = {g: widths.get(g, n) for g, n in spec.group_sizes.items()}
    axes = {
        name: tuple(
            None if entry is None else tuple(Segment(s.group, sizes[s.group], s.block) if s.group in widths else s
                                             for s in entry)
            for entry in entries
        )
        for name, entries in spec.axes.items()
    }
    return replace(spec, axes=axes, group_sizes=sizes)


def check_index_maps(maps: Mapping[str, torch.Tensor], spec: PermutationSpec, widths: Mapping[str, int],
                     origin: str) -> IndexMaps:
    """Validate index maps (one per growable group, ``L_g`` distinct units below ``W_g``); return int64 copies.

    Raises
    ------
    MatchingError
        Naming ``origin`` and the group, if a map is missing, has the wrong length, repeats or exceeds units.
    """
    out: IndexMaps = {}
    for group in sorted(spec.growable):
        if group not in maps:
            raise MatchingError(f"{origin}: no index map for growable group '{group}'")
        m = torch.as_tensor(maps[group]).to(torch.int64).reshape(-1)
        size, width = spec.group_sizes[group], widths.get(group, spec.group_sizes[group])
        if m.numel() != size or torch.unique(m).numel() != size or (m.numel() and (m.min() < 0 or m.max() >= width)):
            raise MatchingError(
                f"{origin}: index map of '{group}' must hold {size} distinct units in 0..{width - 1}, got {m.tolist()}"
            )
        out[group] = m
    return out


def default_index_maps(spec: PermutationSpec, widths: Mapping[str, int],
                       known: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> IndexMaps:
    """Slice for a client without a map: per group the ``L_g`` units held by most known clients, in unit order.

    Ties go to the lower unit number, so without known maps this is the first ``L_g`` units (the units of the
    un-grown model, which every client held before the model first grew).
    """
    out: IndexMaps = {}
    for group in sorted(spec.growable):
        size, width = spec.group_sizes[group], widths.get(group, spec.group_sizes[group])
        counts = torch.zeros(width, dtype=torch.float64)
        for maps in (known or {}).values():
            m = torch.as_tensor(maps[group]).to(torch.int64) if group in maps else None
            if m is not None and m.numel() and int(m.max()) < width:
                counts[m] += 1.0
        # Sort by (-count, unit): a stable sort of the negated counts keeps unit order within ties.
        order = torch.sort(-counts, stable=True).indices[:size]
        out[group] = torch.sort(order).values
    return out


def client_slice(global_state: Mapping[str, torch.Tensor], spec: PermutationSpec,
                 index_maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A client's configured-width state dict: global units ``index_maps[g]`` of every growable group, in order.

    Parameters
    ----------
    global_state
        The (possibly grown) global state dict.
    spec
        The configured-width permutation spec (the clients' model).
    index_maps
        Growable group -> ``(L_g,)`` global unit of each local unit (see :func:`default_index_maps`).

    Returns
    -------
    dict[str, torch.Tensor]
        Every key of ``global_state``; tensors without a growable axis are returned as they are (not copied).

    Raises
    ------
    MatchingError
        If a map is invalid for the widths of ``global_state``.
    """
    widths = widths_of(global_state, spec)
    maps = check_index_maps(index_maps, spec, widths, "client slice")
    where = growable_axes(spec)
    out = {}
    for name, value in global_state.items():
        g = where.get(name)
        out[name] = value if g is None else value.index_select(g.axis, maps[g.group].to(value.device))
    return out


def scatter_units(state: Mapping[str, torch.Tensor], spec: PermutationSpec, index_maps: Mapping[str, torch.Tensor],
                  widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`client_slice`: place local unit ``l`` at global unit ``map[l]``, zeros elsewhere.

    Tensors without a growable axis are returned as they are. With the identity map and configured widths
    the result equals ``state``.
    """
    where = growable_axes(spec)
    out = {}
    for name, value in state.items():
        g = where.get(name)
        if g is None:
            out[name] = value
            continue
        width = widths.get(g.group, value.shape[g.axis])
        if width == value.shape[g.axis] and torch.equal(index_maps[g.group], torch.arange(width)):
            out[name] = value  # identity map at the configured width: nothing moves
            continue
        shape = list(value.shape)
        shape[g.axis] = width
        out[name] = value.new_zeros(shape).index_copy(g.axis, index_maps[g.group].to(value.device), value)
    return out
