"""Instruments for the matching benchmark: an ATen-op meter that counts GEMM FLOPs, and timed assignments.

:class:`OpMeter` sees every ATen op of the code it wraps (a ``TorchDispatchMode``), times it and counts
``2 b m k n`` FLOPs per matrix product; :func:`timed_assignments` times scipy's ``linear_sum_assignment`` as
``strategies.matching.assignment`` calls it. Both serve :func:`benchmarks.matching_case.run_case`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import strategies.matching.assignment as assignment_module

_GEMM_OPS = {
    torch.ops.aten.mm: 0,  # op -> position of the first matrix operand in args
    torch.ops.aten.addmm: 1,
    torch.ops.aten.addmm_: 1,  # in-place: FlopCounterMode does not count it
    torch.ops.aten.bmm: 0,
    torch.ops.aten.baddbmm: 1,
    torch.ops.aten.baddbmm_: 1,  # in-place: FlopCounterMode does not count it
}



def gemm_dims(op: Any, args: Sequence[Any]) -> tuple[int, int, int, int] | None:
    """``(batch, m, k, n)`` of a matrix-product ATen op, None for any other op."""
    first = _GEMM_OPS.get(getattr(op, "overloadpacket", None))
    if first is None:
        return None
    a, b = args[first], args[first + 1]
    if a.dim() == 2:
        return 1, a.shape[0], a.shape[1], b.shape[1]
    return a.shape[0], a.shape[1], a.shape[2], b.shape[2]


class OpMeter(TorchDispatchMode):
    """Times every ATen op and counts the FLOPs of matrix products (``2 b m k n`` per product).

    Counts ``mm``, ``addmm``, ``bmm``, ``baddbmm`` as ``torch.utils.flop_counter.FlopCounterMode`` does, and also
    their in-place variants ``addmm_`` and ``baddbmm_``, which it leaves out.

    Attributes
    ----------
    gemm_flops, gemm_seconds, gemm_cpu_seconds, gemm_calls
        Totals over ``mm``, ``addmm``, ``bmm``, ``baddbmm`` (wall seconds, process-CPU seconds of all threads).
    gemm_flops_by_op
        Op name (``mm``, ``addmm_``, ...) -> FLOPs.
    op_seconds
        Op name -> ``[calls, seconds]``.
    gemm_shapes
        ``"b x m x k x n dtype"`` -> ``[calls, seconds, flops]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gemm_flops = 0.0
        self.gemm_seconds = 0.0
        self.gemm_cpu_seconds = 0.0
        self.gemm_calls = 0
        self.gemm_flops_by_op: dict[str, float] = defaultdict(float)
        self.op_seconds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.gemm_shapes: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def __torch_dispatch__(
        self, func: Any, types: Sequence[type], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        dims = gemm_dims(func, args)
        began, began_cpu = time.perf_counter(), (time.process_time() if dims is not None else 0.0)
        out = func(*args, **(kwargs or {}))
        spent = time.perf_counter() - began
        entry = self.op_seconds[func.overloadpacket.__name__]
        entry[0] += 1
        entry[1] += spent
        if dims is not None:
            flops = 2.0 * math.prod(dims)
            self.gemm_flops += flops
            self.gemm_seconds += spent
            self.gemm_cpu_seconds += time.process_time() - began_cpu
            self.gemm_calls += 1
            self.gemm_flops_by_op[func.overloadpacket.__name__] += flops
            shape = self.gemm_shapes[" x ".join(map(str, dims)) + f" {str(args[-1].dtype).replace('torch.', '')}"]
            shape[0] += 1
            shape[1] += spent
            shape[2] += flops
        return out


@contextmanager
def timed_assignments(record: dict[str, list[float]]) -> Iterator[None]:
    """Time scipy's ``linear_sum_assignment`` as called by the matching; ``record``: side -> ``[calls, seconds]``.

    Raises
    ------
    RuntimeError
        If ``strategies.matching.assignment`` no longer calls it by that name (update this benchmark).
    """
    original = getattr(assignment_module, "linear_sum_assignment", None)
    if original is None:
        raise RuntimeError("strategies.matching.assignment has no linear_sum_assignment to time; update the benchmark")

    def timed(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        began = time.perf_counter()
        out = original(cost, maximize=maximize)
        entry = record.setdefault(str(cost.shape[0]), [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - began
        return out

    assignment_module.linear_sum_assignment = timed
    try:
        yield
    finally:
        assignment_module.linear_sum_assignment = original
