"""Plumbing shared by the CPU benchmarks: the machine's GEMM peak and plain-text tables.

The training-throughput benchmark (:mod:`benchmarks.train_throughput`) and the matching benchmark
(:mod:`benchmarks.matching_benchmark`) both relate the FLOP rate they measure to what ``torch.mm`` reaches on
the same machine, with the same thread count, in the same run: :func:`measure_gemm_peak` measures that rate
and :func:`best_peak` picks the denominator. :func:`text_table` renders their console tables.

Benchmarks run from the repository root as modules (``python -m benchmarks.<name>``), so ``benchmarks``,
``mtmedformer`` and ``strategies`` import without touching ``sys.path``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

GIGA = 1e9


@dataclass
class GemmPeak:
    """Best measured ``torch.mm`` rate of square matrices.

    Attributes
    ----------
    flops_per_s
        Best rate by wall time, FLOP/s, reached at matrix side ``size``.
    size
        Matrix side of the best wall-time rate.
    dtype
        Element type, e.g. ``float32`` or ``bfloat16``.
    flops_per_s_cpu
        Best rate by CPU time, ``2 n^3 x threads / process-CPU seconds``: the rate on idle cores.
    seconds
        Matrix side -> fastest product, wall seconds.
    """

    flops_per_s: float
    size: int
    dtype: str = "float32"
    flops_per_s_cpu: float = 0.0
    seconds: dict[int, float] = field(default_factory=dict)


def measure_gemm_peak(
    threads: int, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5, dtype: torch.dtype = torch.float32
) -> GemmPeak:
    """Measure the best ``torch.mm`` rate of square ``dtype`` matrices with ``threads`` threads.

    Each size gets one untimed product, then ``repeats`` timed ones; ``2 n^3`` FLOPs per product. The fastest
    product over all sizes and repeats defines the peak (by wall time, and separately by process-CPU time), so
    competing processes lower it least. The previous torch thread count is restored afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = GemmPeak(flops_per_s=0.0, size=0, dtype=str(dtype).replace("torch.", ""))
        for n in sizes:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            out = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=out)
            fastest = fastest_cpu = math.inf
            for _ in range(repeats):
                began, began_cpu = time.perf_counter(), time.process_time()
                torch.mm(a, b, out=out)
                fastest = min(fastest, time.perf_counter() - began)
                fastest_cpu = min(fastest_cpu, time.process_time() - began_cpu)
            best.seconds[n] = fastest
            if 2.0 * n**3 / fastest > best.flops_per_s:
                best.flops_per_s, best.size = 2.0 * n**3 / fastest, n
            best.flops_per_s_cpu = max(best.flops_per_s_cpu, 2.0 * n**3 * threads / max(fastest_cpu, 1e-9))
        return best
    finally:
        torch.set_num_threads(previous)


def best_peak(peaks: Sequence[GemmPeak]) -> float:
    """The highest of several GEMM-peak measurements, FLOP/s: the utilisation denominator (the conservative choice).

    Raises
    ------
    ValueError
        If ``peaks`` is empty.
    """
    if not peaks:
        raise ValueError("need at least one GEMM peak measurement")
    return max(p.flops_per_s for p in peaks)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned plain-text table: header, a dashed rule, one line per row, columns two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
