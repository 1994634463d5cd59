"""Permutation specs as data: which axis of which tensor each hidden-unit permutation moves.

A :class:`PermutationSpec` maps every state-dict key to one entry per tensor axis. An entry is ``None`` (the
axis is never permuted: input channels, class outputs, token positions, kernel taps) or a tuple of
:class:`Segment` s that concatenate to the axis: ``(Segment("res", d),)`` for an axis that is one group, or
``(Segment("qk", d), Segment("qk", d), Segment("vo", d))`` for the output rows of a fused q/k/v projection
(a concatenation is the block-diagonal union of its parts' permutations). The matching algorithm reads only
this table (Ainsworth et al., "Git Re-Basin", ICLR 2023, section 3), never the architecture.

A :class:`BlockTie` says that some groups come in equal blocks (attention heads) that may only move as whole
blocks, with one block permutation shared by every group of the tie, while units may also be permuted inside
a block, separately per group. Attention has one tie per layer: ``(qk, vo)`` with ``H`` blocks of ``d / H``.

Permutations are ``int64`` index vectors ``perm`` of a group's size: position ``i`` of the permuted tensor
takes unit ``perm[i]`` of the original one (``permuted = tensor.index_select(axis, perm)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch

from strategies.matching.errors import MatchingError


@dataclass(frozen=True)
class Segment:
    """A contiguous part of one tensor axis: ``units`` consecutive blocks of ``block`` entries.

    Attributes
    ----------
    group
        Permutation group moving the units, or None for a part that is never permuted.
    units
        Number of units; equals the group's size when ``group`` is set.
    block
        Consecutive entries per unit (``block > 1`` for an axis that flattens ``(units, block)``). Default 1.
    """

    group: str | None
    units: int
    block: int = 1

    @property
    def length(self) -> int:
        """Entries of the axis this segment spans."""
        return self.units * self.block


AxisEntry = tuple[Segment, ...] | None
"""One axis of a tensor: None (not permuted) or its segments, in order."""


@dataclass(frozen=True)
class Occurrence:
    """Where a group appears: ``units * block`` entries of axis ``axis`` of tensor ``name`` from ``offset``.

    ``others`` are the groups on the tensor's other axes: the unit rows of this occurrence depend on them.
    """

    name: str
    axis: int
    offset: int
    units: int
    block: int
    others: frozenset[str] = frozenset()


@dataclass(frozen=True)
class BlockTie:
    """Groups whose units form ``blocks`` equal blocks (heads) moved together by one block permutation.

    Attributes
    ----------
    name
        Name of the block permutation (e.g. ``"blocks.0.attn.heads"``), used in diagnostics.
    groups
        The tied groups (e.g. the q/k group and the v/o group of one attention layer); all share the block
        permutation, each has its own permutation inside every block.
    blocks
        Number of blocks; must divide every tied group's size.
    """

    name: str
    groups: tuple[str, ...]
    blocks: int


@dataclass(frozen=True)
class SolveItem:
    """One coordinate of the coordinate ascent: a free group, or all groups of a tie solved jointly."""

    name: str
    groups: tuple[str, ...]
    tie: BlockTie | None


@dataclass(frozen=True)
class PermutationSpec:
    """The permutation symmetries of a network, as a table from tensor axes to groups.

    Attributes
    ----------
    axes
        Every state-dict key -> one :data:`AxisEntry` per tensor axis (``()`` for a scalar).
    group_sizes
        Group name -> number of units, in the order the groups are solved (input side first).
    ties
        Block structures, see :class:`BlockTie`.
    tensor_task
        Keys owned by a task head -> the task name; keys not listed belong to the shared encoder.

    Raises
    ------
    MatchingError
        On construction, if a group is used but not declared (or declared but unused), a segment's units
        differ from its group's size, a tensor carries one group on two different axes, or a tie is invalid.
    """

    axes: Mapping[str, tuple[AxisEntry, ...]]
    group_sizes: Mapping[str, int]
    ties: tuple[BlockTie, ...] = ()
    tensor_task: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        used: set[str] = set()
        for name, entries in self.axes.items():
            seen_axes: dict[str, int] = {}
            for axis, entry in enumerate(entries):
                if entry is None:
                    continue
                if not entry:
                    raise MatchingError(f"'{name}' axis {axis}: an axis entry must be None or hold segments")
                for seg in entry:
                    if seg.units < 1 or seg.block < 1:
                        raise MatchingError(f"'{name}' axis {axis}: segment {seg} needs units >= 1 and block >= 1")
                    if seg.group is None:
                        continue
                    if seg.group not in self.group_sizes:
                        raise MatchingError(f"'{name}' axis {axis} uses undeclared group '{seg.group}'")
                    if seg.units != self.group_sizes[seg.group]:
                        raise MatchingError(
                            f"'{name}' axis {axis}: segment of group '{seg.group}' has {seg.units} units, "
                            f"the group has {self.group_sizes[seg.group]}"
                        )
                    if seen_axes.setdefault(seg.group, axis) != axis:
                        # The alignment objective would be quadratic in that permutation, not linear.
                        raise MatchingError(f"'{name}' carries group '{seg.group}' on two axes")
                    used.add(seg.group)
        unused = sorted(set(self.group_sizes) - used)
        if unused:
            raise MatchingError(f"groups declared but used by no tensor: {unused}")
        tied: set[str] = set()
        for tie in self.ties:
            for group in tie.groups:
                if group not in self.group_sizes:
                    raise MatchingError(f"tie '{tie.name}' names undeclared group '{group}'")
                if group in tied:
                    raise MatchingError(f"group '{group}' is in more than one tie")
                if tie.blocks < 1 or self.group_sizes[group] % tie.blocks:
                    raise MatchingError(
                        f"tie '{tie.name}': {tie.blocks} blocks do not divide group '{group}' "
                        f"of size {self.group_sizes[group]}"
                    )
                tied.add(group)
        unknown = sorted(set(self.tensor_task) - set(self.axes))
        if unknown:
            raise MatchingError(f"tensor_task names keys that are not in the spec: {unknown[:5]}")

    @cached_property
    def occurrences(self) -> dict[str, tuple[Occurrence, ...]]:
        """Group name -> every place it appears (the inverse of :attr:`axes`)."""
        found: dict[str, list[Occurrence]] = {group: [] for group in self.group_sizes}
        for name, entries in self.axes.items():
            for axis, entry in enumerate(entries):
                others = frozenset(
                    seg.group for a, e in enumerate(entries) if a != axis for seg in e or () if seg.group is not None
                )
                offset = 0
                for seg in entry or ():
                    if seg.group is not None:
                        found[seg.group].append(Occurrence(name, axis, offset, seg.units, seg.block, others))
                    offset += seg.length
        return {group: tuple(occ) for group, occ in found.items()}

    @cached_property
    def tie_of(self) -> dict[str, BlockTie]:
        """Group name -> its tie, for tied groups only."""
        return {group: tie for tie in self.ties for group in tie.groups}

    @cached_property
    def solve_items(self) -> tuple[SolveItem, ...]:
        """Coordinates of the ascent in group order; a tie is solved where its first group is declared."""
        items: list[SolveItem] = []
        done: set[str] = set()
        for group in self.group_sizes:
            if group in done:
                continue
            tie = self.tie_of.get(group)
            groups = tie.groups if tie else (group,)
            items.append(SolveItem(tie.name if tie else group, groups, tie))
            done.update(groups)
        return tuple(items)

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups that permute some axis of tensor ``name``."""
        return frozenset(seg.group for entry in self.axes[name] for seg in entry or () if seg.group is not None)

    def task_of(self, name: str) -> str | None:
        """The task owning tensor ``name``, or None for a shared (encoder) tensor."""
        return self.tensor_task.get(name)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks that own at least one tensor, sorted."""
        return tuple(sorted(set(self.tensor_task.values())))

    def check_state(self, state: Mapping[str, torch.Tensor], origin: str = "state dict") -> None:
        """Check that ``state`` has exactly the spec's keys and that every permuted axis has the right length.

        Parameters
        ----------
        state
            Tensors by key.
        origin
            How to name ``state`` in error messages (e.g. ``"client 'site-a'"``).

        Raises
        ------
        MatchingError
            Naming uncovered keys (no spec entry: add them to the spec builder), keys the spec lists but
            ``state`` lacks, and any tensor whose rank or permuted axis length disagrees with the spec.
        """
        uncovered = sorted(set(state) - set(self.axes))
        if uncovered:
            raise MatchingError(
                f"{origin}: {len(uncovered)} keys have no permutation-spec entry: {uncovered[:8]}; "
                "extend the spec builder for these modules (strategies/matching/model_spec.py)"
            )
        missing = sorted(set(self.axes) - set(state))
        if missing:
            raise MatchingError(
                f"{origin}: {len(missing)} keys of the permutation spec are missing: {missing[:8]}; "
                "the state dict comes from a different model config"
            )
        for name, entries in self.axes.items():
            shape = tuple(state[name].shape)
            if len(shape) != len(entries):
                raise MatchingError(f"{origin}: '{name}' has shape {shape}, the spec expects rank {len(entries)}")
            for axis, entry in enumerate(entries):
                if entry is not None and sum(seg.length for seg in entry) != shape[axis]:
                    raise MatchingError(
                        f"{origin}: '{name}' axis {axis} has length {shape[axis]}, the spec expects "
                        f"{sum(seg.length for seg in entry)} ({', '.join(str(s) for s in entry)})"
                    )


class SpecBuilder:
    """Assemble a :class:`PermutationSpec` from per-layer helpers (see ``strategies/matching/layers.py``).

    Examples
    --------
    >>> b = SpecBuilder()
    >>> hidden = b.group("fc.hidden", 8)
    >>> b.add("fc1.weight", b.axis(hidden), None)
    >>> b.add("fc2.weight", None, b.axis(hidden))
    >>> spec = b.build()
    """

    def __init__(self) -> None:
        self._axes: dict[str, tuple[AxisEntry, ...]] = {}
        self._sizes: dict[str, int] = {}
        self._ties: list[BlockTie] = []
        self._tasks: dict[str, str] = {}
        self._task: str | None = None

    def group(self, name: str, size: int) -> str:
        """Declare group ``name`` of ``size`` units and return its name.

        Raises
        ------
        MatchingError
            If the name is taken or ``size < 1``.
        """
        if name in self._sizes:
            raise MatchingError(f"permutation group '{name}' is declared twice")
        if size < 1:
            raise MatchingError(f"permutation group '{name}' needs size >= 1, got {size}")
        self._sizes[name] = size
        return name

    def size(self, group: str) -> int:
        """Size of a declared group."""
        return self._sizes[group]

    def tie(self, name: str, groups: Sequence[str], blocks: int) -> None:
        """Declare that ``groups`` come in ``blocks`` equal blocks moved by one shared block permutation."""
        self._ties.append(BlockTie(name, tuple(groups), blocks))

    def axis(self, *parts: str | tuple[str | None, int] | tuple[str | None, int, int] | None) -> AxisEntry:
        """Build an axis entry from parts: a group name, or ``(group_or_None, units[, block])``.

        ``b.axis("res")`` is one group; ``b.axis(qk, qk, vo)`` a concatenation; ``b.axis(("res", d, 4))``
        a flattened ``(d, 4)`` axis whose blocks of 4 move together.
        """
        segments = []
        for part in parts:
            if isinstance(part, str):
                segments.append(Segment(part, self._sizes[part]))
            elif isinstance(part, tuple):
                segments.append(Segment(*part))
            else:
                raise MatchingError(f"axis part {part!r}: give a group name or (group, units[, block])")
        return tuple(segments)

    @contextmanager
    def for_task(self, task: str) -> Iterator[None]:
        """Within this context every added key belongs to task head ``task``."""
        previous, self._task = self._task, task
        try:
            yield
        finally:
            self._task = previous

    def add(self, name: str, *axes: AxisEntry | str) -> None:
        """Add key ``name`` with one entry per axis (None, an axis entry, or a group name for a whole axis).

        Raises
        ------
        MatchingError
            If the key was already added.
        """
        if name in self._axes:
            raise MatchingError(f"'{name}' is added to the permutation spec twice")
        self._axes[name] = tuple(self.axis(a) if isinstance(a, str) else a for a in axes)
        if self._task is not None:
            self._tasks[name] = self._task

    def build(self) -> PermutationSpec:
        """Return the spec (validated, see :class:`PermutationSpec`)."""
        return PermutationSpec(dict(self._axes), dict(self._sizes), tuple(self._ties), dict(self._tasks))
