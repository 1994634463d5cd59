"""Plain-text report and JSON record of a matching-benchmark run, with the reading against the project's target."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from benchmarks._shared import GemmPeak, best_peak, text_table
from benchmarks.matching_case import GROUP_TYPES, HEADS, OUTSIDE, CaseResult
from strategies.matching import MatchingConfig

GIGA = 1e9
TARGET_CASE = ("base", 8)
TARGET_SECONDS = 60.0
TARGET_PEAK_FRACTION = 0.5

TIME_COLUMNS = (
    "case", "params M", "load", "matching s (CPU s)", "FedAvg s", "ratio", "GEMM GFLOP", "in GEMM s (CPU s)",
    "GEMM-kernel GFLOP/s (%peak)", "same by CPU time (%CPU peak)", "whole-call GFLOP/s (%peak)", "LSA s (calls)",
)  # fmt: skip
GROUP_COLUMNS = (
    "case", "residual s", "mlp s", "heads/qk/vo s", "decoder s", f"{OUTSIDE} s", "sweeps/alignment", "alignments",
    "LOO passes", "moved res", "dist. to base matched / FedAvg", "instrumented = clean",
)  # fmt: skip


def format_report(results: list[CaseResult], peaks: list[GemmPeak], threads: int) -> str:
    """Human-readable report of a run."""
    peak, peak_cpu = best_peak(peaks), best_peak(peaks, by_cpu_time=True)
    first_result = results[0]
    first = first_result.case
    heads = ", ".join(HEADS[first.heads])
    out = [
        f"Matching aggregation benchmark: MTMedFormer depth {first.depth}, patch {first.patch_size}, "
        f"{first.image_size} px, heads: {heads}; float32; client noise {first.noise} x RMS; "
        f"torch threads {threads}, {os.cpu_count()} CPUs visible; {MatchingConfig()}; matching time from "
        + ("the instrumented call (--single-run)" if first_result.single_run else "a clean call"),
        "fp32 GEMM peak (torch.mm, square, best of 5 per size, before; after): "
        + "; ".join(f"{p.flops_per_s / GIGA:.1f} GFLOP/s at n={p.size}" for p in peaks)
        + f" -> peak used: {peak / GIGA:.1f} GFLOP/s by wall time; by CPU time: "
        + "; ".join(f"{p.flops_per_s_cpu / GIGA:.1f}" for p in peaks)
        + f" -> {peak_cpu / GIGA:.1f} GFLOP/s",
        "",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r.case.label,
                f"{r.params / 1e6:.1f}",
                f"{r.load_average:.1f}",
                f"{r.matching_seconds:.2f} ({r.matching_cpu_seconds:.2f})",
                f"{r.fedavg_seconds:.3f}",
                f"{r.ratio:.0f}",
                f"{r.gemm_flops / GIGA:.0f}",
                f"{r.gemm_seconds:.2f} ({r.gemm_cpu_seconds:.2f})",
                f"{r.gemm_rate / GIGA:.1f} ({100 * r.gemm_rate / peak:.0f}%)",
                f"{r.gemm_rate_cpu / GIGA:.1f} ({100 * r.gemm_rate_cpu / peak_cpu:.0f}%)",
                f"{r.whole_rate / GIGA:.1f} ({100 * r.whole_rate / peak:.0f}%)",
                f"{r.lsa_seconds:.2f} ({r.lsa_calls})",
            ]
        )
    out.append(text_table(TIME_COLUMNS, rows))
    out.append("")
    rows = []
    for r in results:
        g = r.group_seconds
        rows.append(
            [
                r.case.label,
                *(f"{g[t]:.2f}" for t in (*GROUP_TYPES[:-1], OUTSIDE)),
                f"{r.sweeps_per_alignment:.2f}",
                str(r.alignments),
                str(r.iterations),
                f"{r.residual_moved:.2f}",
                f"{r.matched_error:.4f} / {r.fedavg_error:.4f}",
                "yes" if r.same_result else "NO",
            ]
        )
    out.append(text_table(GROUP_COLUMNS, rows))
    out.extend(["", *_target_lines(results, peak, peak_cpu, threads), ""])
    largest = max(results, key=lambda r: r.gemm_flops)
    out.append(
        f"Where the time goes ({largest.case.label}, instrumented call {largest.instrumented_seconds:.2f} s): "
        f"GEMM kernels {largest.gemm_seconds:.2f} s, linear_sum_assignment {largest.lsa_seconds:.2f} s, "
        f"Python + dispatch {largest.python_seconds:.2f} s"
    )
    out.append(
        "  ATen ops (calls, s): "
        + ", ".join(f"{name} {int(calls)} {seconds:.2f}" for name, (calls, seconds) in largest.op_seconds.items())
    )
    shapes = largest.gemm_shapes.items()
    out.append(
        "  GEMM shapes b x m x k x n (calls, s, GFLOP/s): "
        + ", ".join(f"{shape} {int(c)} {s:.2f} {f / s / GIGA if s > 0 else 0:.0f}" for shape, (c, s, f) in shapes)
    )
    out.append(
        "  LSA by side (calls, s): "
        + ", ".join(f"{side} {int(calls)} {seconds:.2f}" for side, (calls, seconds) in largest.lsa_by_size.items())
    )
    return "\n".join(out)


def _target_lines(results: list[CaseResult], peak: float, peak_cpu: float, threads: int) -> list[str]:
    hits = [r for r in results if (r.case.preset, r.case.clients) == TARGET_CASE]
    if not hits:
        return [f"target ({TARGET_CASE[0]} J={TARGET_CASE[1]}): not in this run"]
    r = hits[0]
    verdict = lambda ok: "MET" if ok else "MISSED"  # noqa: E731
    fraction = TARGET_PEAK_FRACTION
    return [
        f"target {TARGET_CASE[0]} J={TARGET_CASE[1]} in <= {TARGET_SECONDS:.0f} s ({threads} threads): "
        f"{verdict(r.matching_seconds <= TARGET_SECONDS)} by wall time ({r.matching_seconds:.1f} s); "
        f"{verdict(r.matching_cpu_seconds / threads <= TARGET_SECONDS)} by CPU time / threads "
        f"({r.matching_cpu_seconds / threads:.1f} s, the idle-core estimate; optimistic above 1 thread)",
        f"target GEMMs >= {100 * fraction:.0f}% of peak: {verdict(r.gemm_rate >= fraction * peak)} by wall time "
        f"({100 * r.gemm_rate / peak:.0f}%); {verdict(r.gemm_rate_cpu >= fraction * peak_cpu)} by CPU time "
        f"({100 * r.gemm_rate_cpu / peak_cpu:.0f}%); the whole call reaches {100 * r.whole_rate / peak:.0f}%",
    ]


def to_json(results: list[CaseResult], peaks: list[GemmPeak], threads: int) -> dict[str, Any]:
    """JSON-ready record of a run (derived rates included)."""
    peak, peak_cpu = best_peak(peaks), best_peak(peaks, by_cpu_time=True)
    cases = []
    for r in results:
        record = asdict(r)
        record.update(
            ratio=r.ratio,
            gemm_flops_per_s=r.gemm_rate,
            whole_call_flops_per_s=r.whole_rate,
            gemm_peak_fraction=r.gemm_rate / peak,
            gemm_flops_per_s_cpu=r.gemm_rate_cpu,
            gemm_peak_fraction_cpu=r.gemm_rate_cpu / peak_cpu,
            whole_call_peak_fraction=r.whole_rate / peak,
            python_seconds=r.python_seconds,
        )
        cases.append(record)
    return {
        "threads": threads,
        "gemm_peaks": [asdict(p) for p in peaks],
        "peak_flops_per_s": peak,
        "peak_flops_per_s_cpu": peak_cpu,
        "cases": cases,
    }
