"""Per-layer spec helpers: each adds one module's state-dict keys to a :class:`SpecBuilder`.

``out`` / ``inp`` are axis entries (a group name, an entry from :meth:`SpecBuilder.axis`, or None). Weights
are stored ``(out, in)`` for linear layers, ``(out, in, kh, kw)`` for convolutions and ``(in, out, kh, kw)``
for transposed convolutions, as in PyTorch.
"""

from __future__ import annotations

from strategies.matching.spec import AxisEntry, SpecBuilder

Axis = AxisEntry | str


def linear(b: SpecBuilder, prefix: str, out: Axis, inp: Axis, bias: bool = True) -> None:
    """``nn.Linear``: ``weight (out, in)``, ``bias (out,)``."""
    b.add(f"{prefix}.weight", out, inp)
    if bias:
        b.add(f"{prefix}.bias", out)


def conv(b: SpecBuilder, prefix: str, out: Axis, inp: Axis, bias: bool = True, transposed: bool = False) -> None:
    """``nn.Conv2d`` (``weight (out, in, kh, kw)``) or ``nn.ConvTranspose2d`` (``weight (in, out, kh, kw)``)."""
    if transposed:
        b.add(f"{prefix}.weight", inp, out, None, None)
    else:
        b.add(f"{prefix}.weight", out, inp, None, None)
    if bias:
        b.add(f"{prefix}.bias", out)


def layer_norm(b: SpecBuilder, prefix: str, axis: Axis, affine: bool = True) -> None:
    """``nn.LayerNorm`` over the last axis: ``weight``, ``bias`` ``(C,)``. Permutations only (no rotations)."""
    if affine:
        b.add(f"{prefix}.weight", axis)
        b.add(f"{prefix}.bias", axis)


def batch_norm(b: SpecBuilder, prefix: str, axis: Axis, affine: bool = True, track_running_stats: bool = True) -> None:
    """``nn.BatchNorm2d`` / ``nn.InstanceNorm2d``: ``weight``, ``bias``, ``running_mean``, ``running_var`` ``(C,)``.

    The integer ``num_batches_tracked`` counter has no axis and passes through aggregation unchanged.
    """
    if affine:
        b.add(f"{prefix}.weight", axis)
        b.add(f"{prefix}.bias", axis)
    if track_running_stats:
        b.add(f"{prefix}.running_mean", axis)
        b.add(f"{prefix}.running_var", axis)
        b.add(f"{prefix}.num_batches_tracked")


def group_norm(b: SpecBuilder, prefix: str, group: str, num_groups: int, affine: bool = True) -> None:
    """``nn.GroupNorm`` on the channels of ``group``.

    Channels may only move inside their normalisation group or with their whole group, so the group is tied
    into ``num_groups`` blocks.
    """
    b.tie(f"{group}.norm_groups", (group,), num_groups)
    if affine:
        b.add(f"{prefix}.weight", group)
        b.add(f"{prefix}.bias", group)


def parameter(b: SpecBuilder, name: str, *axes: Axis) -> None:
    """A bare ``nn.Parameter`` or buffer with one entry per axis (e.g. ``cls_token (1, 1, d)``)."""
    b.add(name, *axes)
