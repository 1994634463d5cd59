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

Usage::

    python -m benchmarks.train_throughput [--quick] [--threads N] [--json out.json]
        [--steps K] [--small-batch B] [--precision {fp32,bf16} ...] [--adamw {default,foreach,fused}]

By default the plan has fp32 rows for every configuration and bf16 rows at 128 px. ``--adamw`` swaps the
optimizer kernel; without it the step uses the optimizer training builds. See ``benchmarks/README.md``.

The parts live in :mod:`benchmarks.throughput_step` (configuration, batch, step), :mod:`benchmarks.throughput_measure`
(FLOPs, memory, profile, :func:`~benchmarks.throughput_measure.run_config`) and :mod:`benchmarks.throughput_report`
(tables, JSON); this module plans the run, starts one worker process per configuration and prints the report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks._shared import GemmPeak, measure_gemm_peak, write_json
from benchmarks.throughput_measure import RunResult, result_from_dict, run_config
from benchmarks.throughput_report import format_report, json_payload
from benchmarks.throughput_step import ADAMW_IMPLS, HEADS, PRECISIONS, RunSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

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
    # As a module from the repository root: the worker imports this checkout's packages, like its parent.
    command = [sys.executable, "-m", "benchmarks.train_throughput", "--worker", json.dumps(asdict(spec))]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
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
        write_json(args.json, json_payload(results, fp32_peaks, bf16_peaks, threads, load_averages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
