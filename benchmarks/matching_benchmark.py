"""Aggregation benchmark of the Bayesian nonparametric matching strategy against FedAvg on this machine's CPU.

Inputs of one case (ViT preset x number of clients J):

- MTMedFormer with depth 12, patch 16 and 224 px images (the image size only sets the 197-token position
  embedding), the encoder plus the classification head (``--heads all`` adds the segmentation and detection
  decoders). Float32 weights: the random initialisation with every floating tensor drifted by Gaussian noise
  of 0.5 x its RMS (0.02 for all-zero tensors), so biases and norms are not constant: the *base* model.
- Client j holds ``P_j(base + noise_j)``: noise of ``--noise`` (default 0.1) x each tensor's RMS, then a
  uniformly random valid permutation ``P_j`` of every group (:func:`strategies.matching.random_permutations`),
  with ``n_j = 100 + 50 j`` samples for every task. The previous global model is the base. Matching must undo J
  random permutations of every group (design doc section 9, checks 2-3): real work, the worst case for its
  search, and the matched result must land near the base while FedAvg's does not (both distances reported).

Measured in one process, in the same run:

- matching time: wall and process-CPU seconds of one clean :func:`strategies.matching.match_and_merge` call
  (default :class:`~strategies.matching.MatchingConfig`); with ``--single-run`` the instrumented call below is
  the only one and gives the time (its meter costs about 5 microseconds per ATen op);
- FedAvg time on the same client state dicts: the arithmetic of Flower's ``aggregate_arrayrecords`` (flwr 1.42,
  ``out[key] = x * w`` for the first client, then ``out[key] += x * w`` with ``w = n_j / sum n``, numpy), on
  arrays already in memory (Flower's deserialisation is not timed); median of 3 repeats;
- the GEMM throughput of the matching. FLOPs are counted by instrumenting a second call of ``match_and_merge``
  on the same inputs (deterministic: same seed; its permutations are compared with the clean call's) with
  :class:`OpMeter`, a ``TorchDispatchMode`` that sees every ATen op: for ``mm``/``addmm``/``bmm``/``baddbmm`` it
  adds ``2 m k n`` FLOPs per product, the convention of ``torch.utils.flop_counter.FlopCounterMode`` (the smoke
  test checks that both counts agree), plus the in-place ``addmm_``/``baddbmm_`` that FlopCounterMode ignores,
  and times each kernel call alone (wall and process-CPU seconds). The matching's only matrix products are the
  cost (similarity) matrices of ``strategies/matching/align.py``, so these are the cost-matrix FLOPs. Rates:
  FLOPs / wall seconds inside the GEMM kernels, the same by CPU time (``FLOPs x threads / CPU seconds``: the
  rate on idle cores), and FLOPs / the clean call's wall time; each as a fraction of the peak below;
- this machine's fp32 GEMM peak: ``torch.mm`` of square fp32 matrices (n = 1024, 2048, 3072), best of 5 per
  size, with the benchmark's thread count, measured before and after the cases (the best is used), by wall time
  and by CPU time (the reference of the CPU-time rate);
- time per group type from the diagnostics (``MergeDiagnostics.groups``, per solve item): residual stream,
  MLP hidden, attention heads with their within-head q/k and v/o permutations, decoder channels; the rest of the
  call (posterior sums, noise variances, input checks, objective evaluations) as "outside alignment";
- from the instrumented call, where the time goes: seconds per ATen op, GEMM shapes, and scipy's
  ``linear_sum_assignment`` by matrix size (the name is wrapped in ``strategies.matching.assignment`` for that
  call only); Python and dispatch overhead is the remainder.

The machine may be shared: the 1-minute load average is printed per case, and process-CPU seconds next to wall
seconds. With one thread, CPU seconds are what the call would take on an idle core; with more, they include
OpenMP spin-waiting, and on an oversubscribed machine several threads can be slower than one.

Target (project issue): a ``base`` encoder with 8 clients aggregates in at most 60 s on 2 CPU cores, with the
matching GEMMs at half of the measured peak or better.

Usage (from the repository root)::

    python -m benchmarks.matching_benchmark [--quick] [--threads N] [--json out.json]
        [--case base:8 ...] [--heads cls|all] [--image-size 224] [--noise 0.1] [--single-run]

``--quick`` runs tiny and small with J = 3; the default plan is tiny, small and base with J = 3, 5 and 8;
``--case`` (repeatable) replaces the plan. The inputs and the measurement of one case are
:mod:`benchmarks.matching_case`, the instruments :mod:`benchmarks.op_meter`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks._shared import GIGA, GemmPeak, best_peak, measure_gemm_peak, text_table
from benchmarks.matching_case import GROUP_TYPES, HEADS, OUTSIDE, Case, CaseResult, run_case
from strategies.matching import MatchingConfig

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


def benchmark_plan(quick: bool, heads: str = "cls", image_size: int = 224, noise: float = 0.1) -> list[Case]:
    """``--quick``: tiny and small with J = 3; otherwise tiny, small and base with J = 3, 5 and 8."""
    presets, counts = (("tiny", "small"), (3,)) if quick else (("tiny", "small", "base"), (3, 5, 8))
    return [Case(p, j, heads=heads, image_size=image_size, noise=noise) for p in presets for j in counts]


def parse_case(text: str, heads: str, image_size: int, noise: float) -> Case:
    """``"base:8"`` -> ``Case("base", 8, ...)``.

    Raises
    ------
    argparse.ArgumentTypeError
        If the text is not ``<preset>:<clients>``.
    """
    preset, _, count = text.partition(":")
    if preset not in ("tiny", "small", "base") or not count.isdigit():
        raise argparse.ArgumentTypeError(f"--case takes <tiny|small|base>:<clients>, e.g. base:8; got {text!r}")
    return Case(preset, int(count), heads=heads, image_size=image_size, noise=noise)


def format_report(results: list[CaseResult], peaks: list[GemmPeak], threads: int) -> str:
    """Human-readable report of a run."""
    peak, peak_cpu = best_peak(peaks), max(p.flops_per_s_cpu for p in peaks)
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
    peak, peak_cpu = best_peak(peaks), max(p.flops_per_s_cpu for p in peaks)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny and small, J=3 only")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--case",
        action="append",
        default=None,
        metavar="PRESET:J",
        help="run only these cases (repeatable), e.g. --case base:8",
    )
    parser.add_argument("--heads", choices=sorted(HEADS), default="cls", help="cls (default) or all task heads")
    parser.add_argument("--image-size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--noise", type=float, default=0.1, help="client noise x tensor RMS (default 0.1)")
    parser.add_argument(
        "--single-run", action="store_true", help="time the instrumented matching call only (halves the run time)"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        plan = (
            [parse_case(c, args.heads, args.image_size, args.noise) for c in args.case]
            if args.case
            else benchmark_plan(args.quick, args.heads, args.image_size, args.noise)
        )
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    peaks = [measure_gemm_peak(args.threads)]
    results = []
    for case in plan:
        results.append(run_case(case, single_run=args.single_run))
        print(f"done: {case.label} in {results[-1].matching_seconds:.1f} s", file=sys.stderr, flush=True)
    peaks.append(measure_gemm_peak(args.threads))
    print(format_report(results, peaks, args.threads))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(results, peaks, args.threads), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
