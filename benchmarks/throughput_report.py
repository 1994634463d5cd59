"""Plain-text report and JSON payload of a throughput run: throughput, MFU, memory, FLOPs by part, profiles."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from typing import Any

import torch

from benchmarks._shared import GemmPeak, best_peak, text_table
from benchmarks.throughput_measure import CATEGORIES, RunResult
from mtmedformer import TASKS


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _peak_lines(fp32_peaks: list[GemmPeak], bf16_peaks: list[GemmPeak]) -> list[str]:
    lines = []
    for name, peaks, use in (
        ("fp32", fp32_peaks, "'MFU % (fp32 peak)'"),
        ("bf16", bf16_peaks, "'MFU % (bf16 peak)'"),
    ):
        if peaks:
            measured = ", then ".join(f"{p.flops_per_s / 1e9:.1f} GFLOP/s (n={p.size})" for p in peaks)
            lines.append(
                f"{name} GEMM peak (torch.mm, best over n x repeats), measured {measured}"
                f" -> {use} uses {best_peak(peaks) / 1e9:.1f} GFLOP/s"
            )
    return lines


def _main_table(results: list[RunResult], fp32_peak: float, bf16_peak: float | None) -> str:
    header = [
        "preset",
        "px",
        "batch",
        "heads",
        "precision",
        "optimizer",
        "params M",
        "step s",
        "img/s",
        "train GFLOP/img",
        "fwd GFLOP/img",
        "GFLOP/s",
        "MFU % (fp32 peak)",
        "MFU % (bf16 peak)",
        "CPU %",
        "built RSS MiB",
        "peak RSS MiB",
        "growth MiB",
    ]
    rows = []
    for r in results:
        s = r.spec
        bf16_mfu = _pct(r.mfu(bf16_peak)) if bf16_peak is not None and s.precision == "bf16" else "-"
        rows.append(
            [
                s.preset,
                str(s.image_size),
                str(s.batch_size),
                s.heads,
                s.precision,
                s.optimizer,
                f"{r.parameters / 1e6:.2f}",
                f"{r.median_step_s:.2f}",
                f"{r.images_per_s:.2f}",
                f"{r.train_flops_per_image / 1e9:.2f}",
                f"{r.forward_flops_per_image / 1e9:.2f}",
                f"{r.train_flops_per_image * r.images_per_s / 1e9:.1f}",
                _pct(r.mfu(fp32_peak)),
                bf16_mfu,
                f"{100 * r.cpu_share:.0f}",
                f"{r.built_rss_mib:.0f}",
                f"{r.peak_rss_mib:.0f}",
                f"{r.rss_growth_mib:.0f}",
            ]
        )
    return text_table(header, rows)


def precision_pairs(results: list[RunResult]) -> list[tuple[RunResult, RunResult]]:
    """``(fp32 result, bf16 result)`` of every configuration measured in both precisions, in run order."""
    fp32 = {r.spec: r for r in results if r.spec.precision == "fp32"}
    return [
        (fp32[replace(r.spec, precision="fp32")], r)
        for r in results
        if r.spec.precision == "bf16" and replace(r.spec, precision="fp32") in fp32
    ]


def _precision_table(pairs: list[tuple[RunResult, RunResult]]) -> str:
    header = ["config", "fp32 img/s", "bf16 img/s", "bf16 speed-up x", "fp32 peak RSS MiB", "bf16 peak RSS MiB"]
    rows = [
        [
            a.spec.config,
            f"{a.images_per_s:.2f}",
            f"{b.images_per_s:.2f}",
            f"{b.images_per_s / a.images_per_s:.2f}",
            f"{a.peak_rss_mib:.0f}",
            f"{b.peak_rss_mib:.0f}",
        ]
        for a, b in pairs
    ]
    return text_table(header, rows)


def _parts_table(results: list[RunResult]) -> str | None:
    parts = ["encoder", *TASKS]
    rows, seen = [], set()
    for r in results:
        if r.spec.heads != "all" or r.spec.config in seen:
            continue  # model FLOPs do not depend on the precision: one row per configuration
        seen.add(r.spec.config)
        total = r.forward_flops_per_image
        shares = (f"{100 * r.forward_flops_by_part.get(p, 0.0) / total:.1f}" for p in parts)
        rows.append([r.spec.config, f"{total / 1e9:.2f}", *shares])
    return text_table(["config", "fwd GFLOP/img", *(f"{p} %" for p in parts)], rows) if rows else None


def _profile_section(r: RunResult, fp32_peak: float, bf16_peak: float | None) -> list[str]:
    p = r.profile
    if p is None:
        return []
    peaks = {"fp32": fp32_peak}
    if r.spec.precision == "bf16" and bf16_peak is not None:
        peaks["bf16"] = bf16_peak
    rows = []
    for c in CATEGORIES:
        ms, gflop = p.category_ms[c], p.category_gflops[c]
        rate = gflop / (ms / 1e3) if ms > 0 and gflop > 0 else float("nan")
        measured = not math.isnan(rate)
        shares = (_pct(rate * 1e9 / peak) if measured else "-" for peak in peaks.values())
        rows.append(
            [c, f"{ms:.0f}", f"{100 * ms / p.step_ms:.1f}", f"{gflop:.1f}", f"{rate:.1f}" if measured else "-", *shares]
        )
    header = ["category", "ms/step", "% time", "GFLOP/step", "GFLOP/s", *(f"% {name} peak" for name in peaks)]
    phases = ", ".join(f"{k} {v:.0f} ms" for k, v in p.phase_ms.items())
    top = [
        [name, cat, f"{ms:.0f}", f"{100 * ms / p.step_ms:.1f}", f"{calls:.0f}"] for name, cat, ms, calls in p.top_ops
    ]
    return [
        f"Profile of {r.spec.label} ({r.spec.profile_steps} step(s), self CPU time; step {p.step_ms:.0f} ms)",
        text_table(header, rows),
        "",
        f"Phases: {phases}",
        "",
        "Top operations by self CPU time",
        text_table(["op", "category", "ms/step", "%", "calls/step"], top),
        "",
    ]


def json_payload(
    results: list[RunResult],
    fp32_peaks: list[GemmPeak],
    bf16_peaks: list[GemmPeak],
    threads: int,
    load_averages: tuple[float, float],
) -> dict[str, Any]:
    """Every number of the run as JSON-ready data: peaks (FLOP/s), results, and each result's MFU.

    Each result gets ``mfu_fp32_peak`` (the project's MFU, every row) and ``mfu_bf16_peak`` (bf16 rows; None
    for fp32 rows), both fractions, not percentages.
    """
    fp32_peak, bf16_peak = best_peak(fp32_peaks), best_peak(bf16_peaks)
    return {
        "threads": threads,
        "load_averages_1min": load_averages,
        "torch": torch.__version__,
        "fp32_gemm_peaks": [asdict(p) for p in fp32_peaks],
        "bf16_gemm_peaks": [asdict(p) for p in bf16_peaks],
        "fp32_peak_flops_per_s": fp32_peak,
        "bf16_peak_flops_per_s": bf16_peak,
        "results": [
            asdict(r)
            | {
                "mfu_fp32_peak": r.mfu(fp32_peak),
                "mfu_bf16_peak": r.mfu(bf16_peak) if r.spec.precision == "bf16" else None,
            }
            for r in results
        ],
    }


def format_report(
    results: list[RunResult],
    fp32_peaks: list[GemmPeak],
    bf16_peaks: list[GemmPeak],
    threads: int,
    load_averages: tuple[float, float] | None = None,
) -> str:
    """Render the results as plain-text tables (throughput/MFU/memory, bf16 vs fp32, FLOPs by part, profiles).

    ``fp32_peaks`` and ``bf16_peaks`` are the GEMM measurements of the run (the best of each is used, see
    :func:`best_peak`): every row's MFU is against the fp32 peak, bf16 rows' also against the bf16 peak (when
    measured). ``load_averages`` are the 1-minute load average at the start and the end of the run, shown so
    competing load is visible.

    Raises
    ------
    ValueError
        If ``fp32_peaks`` is empty.
    """
    fp32_peak = best_peak(fp32_peaks)
    bf16_peak = best_peak(bf16_peaks) if bf16_peaks else None
    out = [
        f"torch {torch.__version__}, {threads} thread(s) (torch.set_num_threads), {os.cpu_count()} logical CPU(s)",
        *_peak_lines(fp32_peaks, bf16_peaks),
    ]
    if load_averages is not None:
        out.append(f"1-min load average: {load_averages[0]:.1f} at start, {load_averages[1]:.1f} at end")
    out += [
        "",
        "Training throughput (median of timed steps), model FLOPs, MFU and memory",
        _main_table(results, fp32_peak, bf16_peak),
        "",
    ]
    pairs = precision_pairs(results)
    if pairs:
        out += ["bf16 vs fp32, same configuration, same run", _precision_table(pairs), ""]
    parts = _parts_table(results)
    if parts is not None:
        out += ["Share of model-forward FLOPs by part (the same in both precisions)", parts, ""]
    for r in results:
        out += _profile_section(r, fp32_peak, bf16_peak)
    out += [
        "MFU % (fp32 peak): train GFLOP/img x img/s / the fp32 torch.mm peak of this run, for every row (the",
        "project's MFU). MFU % (bf16 peak): bf16 rows only, the same FLOP/s over the bf16 torch.mm peak of this",
        "run (how close bf16 training comes to what bf16 matrix products reach). The two are not comparable.",
        "CPU %: process CPU time during the timed steps / (wall time x threads); below ~90 % other processes",
        "competed for the cores, and throughput/MFU are lower than this machine gives when idle.",
        "Built RSS: after building model, loss, optimizer and batch (interpreter, torch and MONAI included).",
        "Peak RSS: VmHWM of the configuration's own process during the timed steps; growth = peak - built.",
    ]
    if not all(r.hwm_reset for r in results):
        out.append("Note: VmHWM could not be reset (/proc/self/clear_refs); peaks include warm-up and FLOP counting.")
    return "\n".join(out)
