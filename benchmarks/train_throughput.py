"""Training-throughput benchmark of MTMedFormer on this machine's CPU.

For each configuration (ViT preset, image size, enabled heads, training precision) it measures, in a fresh
subprocess:

- training throughput (images/s) from the median of several timed steps after warm-up; one step is forward,
  hybrid loss, backward and an AdamW step (the project's own model, loss and optimizer construction), with the
  forward under the engine's own mixed-precision path for ``train.precision`` (``fp32`` or ``bf16``);
- model FLOPs per image of one real training step (forward + loss + backward) and of the model forward alone,
  counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products, convolutions, attention;
  element-wise work and the optimizer are not FLOPs in this convention), and the forward split by model part;
  the count depends on shapes only, so it is the same in both precisions;
- the process's peak resident memory during the timed steps (``VmHWM`` of ``/proc/self/status``);
- model-FLOP utilisation (MFU): achieved FLOP/s over this machine's fp32 GEMM peak, measured in the same run
  with ``torch.mm`` on large square matrices and the same thread count; bf16 rows are also reported against
  the bf16 ``torch.mm`` peak of the same run;
- for tiny at 128 px with all heads (in each precision), a ``torch.profiler`` breakdown of where the step's
  time goes (GEMM, attention, convolution, norm, element-wise, copies, optimizer, framework) and the FLOP/s
  each kind reaches.

Usage (from the repository root)::

    python -m benchmarks.train_throughput [--quick] [--threads N] [--json out.json]
        [--steps K] [--small-batch B] [--precision {fp32,bf16} ...] [--adamw {default,foreach,fused}]

By default the plan has fp32 rows for every configuration and bf16 rows at 128 px. ``--adamw`` swaps the
optimizer kernel; without it the step uses the optimizer training builds. See ``benchmarks/README.md``.

The configuration and its training step are :mod:`benchmarks.throughput_bench`, the measurement of one
configuration :mod:`benchmarks.throughput_measure`; this module plans the run, starts one worker process per
configuration and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks._shared import GemmPeak, best_peak, measure_gemm_peak, text_table
from benchmarks.throughput_bench import ADAMW_IMPLS, HEADS, PRECISIONS, RunSpec
from benchmarks.throughput_measure import CATEGORIES, RunResult, result_from_dict, run_config
from mtmedformer import TASKS

REPO_ROOT = Path(__file__).resolve().parents[1]  # the worker runs as `python -m` from here

BF16_SIZES = (128,)
"""Image sizes of the default plan's bf16 rows (fp32 rows cover every size of the plan)."""
RESULT_PREFIX = "BENCH_RESULT "  # marks the worker's JSON line on stdout
PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""Precision name -> dtype of the GEMM peaks measured in every run."""


def measure_peaks(threads: int) -> dict[str, GemmPeak]:
    """Measure the fp32 and the bf16 GEMM peak, one after the other (see :func:`measure_gemm_peak`)."""
    return {name: measure_gemm_peak(threads, dtype=dtype) for name, dtype in PEAK_DTYPES.items()}


def run_in_subprocess(spec: RunSpec) -> RunResult:
    """Run :func:`run_config` in a fresh Python process so that its peak RSS belongs to ``spec`` alone.

    Raises
    ------
    RuntimeError
        If the worker fails; the message carries the tail of its stderr.
    """
    command = [sys.executable, "-m", "benchmarks.train_throughput", "--worker", json.dumps(asdict(spec))]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
    return parse_worker_output(spec, done.returncode, done.stdout, done.stderr)


def parse_worker_output(spec: RunSpec, returncode: int, stdout: str, stderr: str) -> RunResult:
    """Read the :class:`RunResult` a ``--worker`` process printed (its last line starting with ``BENCH_RESULT``).

    Raises
    ------
    RuntimeError
        If the worker exited with an error or printed no result; the message carries the tail of its stderr.
    """
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker for {spec.label} failed (exit {returncode}):\n{stderr[-3000:]}")
    return result_from_dict(json.loads(lines[-1][len(RESULT_PREFIX) :]))


def benchmark_plan(
    quick: bool,
    threads: int,
    small_batch: int = 16,
    timed_steps: int | None = None,
    precisions: tuple[str, ...] = PRECISIONS,
    adamw: str = "default",
) -> list[RunSpec]:
    """The configurations of a run: tiny (batch 32) and small (``small_batch``), all heads and cls only.

    The full run covers 128 and 224 px with 2 warm-up steps (the first FLOP-counted) and 3 timed steps;
    ``quick`` covers 128 px only with 1 warm-up and 2 timed steps. ``timed_steps`` overrides the number of timed
    steps. fp32 rows cover every size, bf16 rows the sizes in :data:`BF16_SIZES` (128 px); the precisions of one
    configuration run one after the other, so they see similar competing load. Tiny at 128 px with all heads
    is profiled for 1 step in each precision. ``adamw`` applies to every row (see :class:`RunSpec`).

    Raises
    ------
    ValueError
        If ``precisions`` is empty or holds a value outside :data:`PRECISIONS`.
    """
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise ValueError(f"precisions must be a non-empty subset of {list(PRECISIONS)}, got {list(precisions)}")
    sizes = (128,) if quick else (128, 224)
    warmup, timed, profiled = (1, 2, 1) if quick else (2, 3, 1)
    timed = timed_steps or timed
    plan = []
    for preset, batch in (("tiny", 32), ("small", small_batch)):
        for size in sizes:
            for heads in HEADS:
                profile_steps = profiled if (preset, size, heads) == ("tiny", 128, "all") else 0
                for precision in dict.fromkeys(precisions):  # ordered, without repeats
                    if precision == "bf16" and size not in BF16_SIZES:
                        continue
                    plan.append(
                        RunSpec(
                            preset=preset,
                            image_size=size,
                            batch_size=batch,
                            heads=heads,
                            warmup_steps=warmup,
                            timed_steps=timed,
                            threads=threads,
                            profile_steps=profile_steps,
                            precision=precision,
                            adamw=adamw,
                        )
                    )
    return plan


# ---------------------------------------------------------------------------------------------- reporting


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 px only, 1 warm-up and 2 timed steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    parser.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    parser.add_argument("--small-batch", type=int, default=16, help="batch size of the small preset (default 16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 3, quick 2)")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="training precisions to measure (default: fp32 bf16; bf16 rows at 128 px only)",
    )
    parser.add_argument("--adamw", choices=ADAMW_IMPLS, default="default", help="AdamW implementation")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one RunSpec as JSON
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.small_batch < 1:
        parser.error(f"--small-batch must be >= 1, got {args.small_batch}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark plan, print the tables, optionally write JSON. Returns the exit status."""
    args = parse_args(argv)
    if args.worker is not None:
        result = run_config(RunSpec(**json.loads(args.worker)))
        print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
        return 0
    threads = args.threads or len(os.sched_getaffinity(0))
    load_start = os.getloadavg()[0]
    plan = benchmark_plan(args.quick, threads, args.small_batch, args.steps, tuple(args.precision), args.adamw)
    peaks = [measure_peaks(threads)]
    results = []
    for number, spec in enumerate(plan, start=1):
        start = time.perf_counter()
        results.append(run_in_subprocess(spec))
        print(
            f"[{number}/{len(plan)}] {spec.label}: {results[-1].images_per_s:.2f} img/s "
            f"({time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    peaks.append(measure_peaks(threads))  # again at the end: competing load shows as a gap between the two
    fp32_peaks, bf16_peaks = [p["fp32"] for p in peaks], [p["bf16"] for p in peaks]
    load_averages = (load_start, os.getloadavg()[0])
    print(format_report(results, fp32_peaks, bf16_peaks, threads, load_averages))
    if args.json is not None:
        payload = json_payload(results, fp32_peaks, bf16_peaks, threads, load_averages)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
