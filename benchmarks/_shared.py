"""Pieces every CPU benchmark uses: the GEMM peak that MFU-style figures divide by, plain-text tables, JSON output.

The benchmarks run as modules from the repository root (``python -m benchmarks.train_throughput``), so the
project's packages import from the checkout without any ``sys.path`` manipulation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtmedformer.atomic import atomic_write_text

PEAK_SIZES = (1024, 2048, 3072)
"""Sides of the square matrices the GEMM peak is measured on."""


@dataclass
class GemmPeak:
    """Best measured ``torch.mm`` rate of square matrices of one dtype.

    Attributes
    ----------
    flops_per_s
        Best rate by wall time, FLOP/s, reached at matrix side ``size``.
    size
        Matrix side of the best wall-time rate.
    dtype
        ``torch`` dtype name without the ``torch.`` prefix, e.g. ``float32``.
    flops_per_s_cpu
        Best rate by process-CPU time, ``2 n^3 x threads / CPU seconds``: the rate the same threads reach on idle
        cores (a shared machine lowers the wall-time rate, not this one).
    seconds
        Matrix side -> fastest product, wall seconds.
    """

    flops_per_s: float
    size: int
    dtype: str = "float32"
    flops_per_s_cpu: float = 0.0
    seconds: dict[int, float] = field(default_factory=dict)


def measure_gemm_peak(
    threads: int, sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5, dtype: torch.dtype = torch.float32
) -> GemmPeak:
    """Measure the best ``torch.mm`` rate of square ``dtype`` matrices with ``threads`` torch threads.

    Each size gets one untimed product, then ``repeats`` timed ones; a product is ``2 n^3`` FLOPs. The fastest
    product over all sizes and repeats defines the peak (by wall time and, separately, by CPU time), so competing
    processes lower it least. The caller's thread count is restored afterwards.

    Raises
    ------
    ValueError
        If ``threads``, ``repeats`` or a size is below 1.
    """
    if threads < 1 or repeats < 1 or not sizes or min(sizes) < 1:
        raise ValueError(f"need threads, repeats and sizes >= 1, got {threads}, {repeats}, {list(sizes)}")
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


def best_peak(peaks: Sequence[GemmPeak], by_cpu_time: bool = False) -> float:
    """The highest of several GEMM-peak measurements, FLOP/s (the conservative denominator of a utilisation).

    Raises
    ------
    ValueError
        If ``peaks`` is empty.
    """
    if not peaks:
        raise ValueError("need at least one GEMM peak measurement")
    return max(p.flops_per_s_cpu if by_cpu_time else p.flops_per_s for p in peaks)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A right-aligned plain-text table: header, a dash rule, one line per row (columns two spaces apart)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (a crash never leaves half a results file)."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
