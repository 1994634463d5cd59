"""Apply, compose, invert and draw permutations described by a :class:`PermutationSpec`.

A permutation set ``perms`` maps group names to ``int64`` index vectors; position ``i`` of a permuted axis
takes unit ``perms[group][i]`` of the original. Groups missing from ``perms`` are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from strategies.matching.spec import AxisEntry, BlockTie, PermutationSpec

Perms = dict[str, torch.Tensor]


def identity_permutations(spec: PermutationSpec) -> Perms:
    """The identity permutation of every group."""
    return {group: torch.arange(size) for group, size in spec.group_sizes.items()}


def axis_index(entry: AxisEntry, perms: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """Index vector that permutes a whole axis, or None when no segment of it is permuted.

    Each segment ``(units, block)`` at ``offset`` maps entry ``offset + u * block + e`` to
    ``offset + perm[u] * block + e``; unpermuted segments keep their entries.
    """
    if entry is None or not any(seg.group in perms for seg in entry):
        return None
    parts = []
    offset = 0
    for seg in entry:
        if seg.group in perms:
            units = perms[seg.group] * seg.block  # (units,) first entry of each source unit
            parts.append(offset + (units[:, None] + torch.arange(seg.block)).reshape(-1))  # (units * block,)
        else:
            parts.append(offset + torch.arange(seg.length))
        offset += seg.length
    return torch.cat(parts)


def permute_tensor(
    tensor: torch.Tensor, entries: tuple[AxisEntry, ...], perms: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Permute every axis of ``tensor`` that ``entries`` maps to a group in ``perms`` (a new tensor)."""
    out = tensor
    for axis, entry in enumerate(entries):
        index = axis_index(entry, perms)
        if index is not None:
            out = out.index_select(axis, index.to(tensor.device))
    return out


def apply_permutations(
    state: Mapping[str, torch.Tensor], spec: PermutationSpec, perms: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return ``state`` with every group of ``perms`` applied to every axis the spec maps to it.

    Parameters
    ----------
    state
        Tensors by key; every key must be in ``spec`` (see :meth:`PermutationSpec.check_state`).
    spec
        The permutation spec.
    perms
        Group -> index vector; groups left out are not permuted.

    Returns
    -------
    dict[str, torch.Tensor]
        Same keys, shapes and dtypes. Untouched tensors are returned as they are (not copied).
    """
    # Identity permutations copy nothing.
    moving = {group: perm for group, perm in perms.items() if not torch.equal(perm, torch.arange(perm.numel()))}
    return {name: permute_tensor(value, spec.axes[name], moving) for name, value in state.items()}


def compose(first: Mapping[str, torch.Tensor], then: Mapping[str, torch.Tensor]) -> Perms:
    """Permutation set equal to applying ``first`` and then ``then``: ``result[g] = first[g][then[g]]``."""
    out = dict(first)
    for group, perm in then.items():
        out[group] = first[group][perm] if group in first else perm
    return out


def invert(perms: Mapping[str, torch.Tensor]) -> Perms:
    """The inverse permutation set: applying ``perms`` then ``invert(perms)`` is the identity."""
    return {group: torch.argsort(perm) for group, perm in perms.items()}


def block_permutation(block_perm: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """Compose a permutation of ``H`` blocks of ``m`` units from its block and within-block parts.

    Parameters
    ----------
    block_perm
        ``(H,)``: new block ``a`` takes old block ``block_perm[a]``.
    within
        ``(H, m)``: inside new block ``a``, unit ``i`` takes unit ``within[a, i]`` of that old block.

    Returns
    -------
    torch.Tensor
        ``(H * m,)`` with ``perm[a * m + i] = block_perm[a] * m + within[a, i]``.
    """
    m = within.shape[1]
    return (block_perm[:, None] * m + within).reshape(-1)


def split_block_permutation(perm: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`block_permutation`: ``(block_perm (H,), within (H, m))``.

    Raises
    ------
    ValueError
        If ``perm`` does not move whole blocks.
    """
    m = perm.numel() // blocks
    grid = perm.view(blocks, m)  # (H, m)
    block_perm = grid[:, 0] // m
    if not torch.equal(grid // m, block_perm[:, None].expand(blocks, m)):
        raise ValueError(f"permutation does not move whole blocks of {m} units")
    return block_perm, grid % m


def random_permutations(spec: PermutationSpec, generator: torch.Generator) -> Perms:
    """Draw a uniformly random valid permutation of every group (ties get a shared block permutation)."""
    perms: Perms = {}
    for item in spec.solve_items:
        if item.tie is None:
            (group,) = item.groups
            perms[group] = torch.randperm(spec.group_sizes[group], generator=generator)
        else:
            perms.update(random_tied_permutations(spec, item.tie, generator))
    return perms


def random_tied_permutations(spec: PermutationSpec, tie: BlockTie, generator: torch.Generator) -> Perms:
    """Random permutations of a tie's groups: one block permutation, independent within-block ones."""
    block_perm = torch.randperm(tie.blocks, generator=generator)
    out = {}
    for group in tie.groups:
        m = spec.group_sizes[group] // tie.blocks
        within = torch.stack([torch.randperm(m, generator=generator) for _ in range(tie.blocks)])  # (H, m)
        out[group] = block_permutation(block_perm, within)
    return out


def moved_fraction(perm: torch.Tensor) -> float:
    """Fraction of positions whose unit changed (0 for the identity)."""
    return float((perm != torch.arange(perm.numel())).float().mean()) if perm.numel() else 0.0
