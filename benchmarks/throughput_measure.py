"""Measure one :class:`~benchmarks.throughput_bench.RunSpec` in this process: time, FLOPs, memory, profile.

:func:`run_config` builds the configuration's bench, counts one real training step's FLOPs
(:class:`torch.utils.flop_counter.FlopCounterMode`, with the CPU attention kernels added), times the steps,
reads the process's peak RSS and, when asked, profiles a step by category of operation. The command line
(:mod:`benchmarks.train_throughput`) runs it in a fresh subprocess per configuration.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from benchmarks.throughput_bench import Bench, RunSpec, build_bench, forward_and_loss, train_step

CATEGORIES = ("gemm", "attention", "conv", "norm", "elementwise", "copy+fill", "optimizer", "framework")
"""Profile categories; ``norm`` + ``elementwise`` is the usual "norm+elementwise" group."""
PHASES = ("forward", "loss", "backward", "optimizer")

_GEMM_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "addbmm"}
_COPY_FILL_OPS = {"copy_", "to_copy", "fill_", "zero_", "cat", "clone", "contiguous", "stack", "index_put_impl_"}


@dataclass
class ProfileBreakdown:
    """Where one training step's CPU time goes (``torch.profiler`` self times, averaged over profiled steps).

    Attributes
    ----------
    step_ms
        Sum of all self times per step, ms (the profiled step's wall time on the calling thread).
    category_ms
        Category (see :data:`CATEGORIES`) -> self time per step, ms.
    category_gflops
        Category -> model GFLOP per step of that category's operations (from the FLOP count).
    phase_ms
        Phase (forward, loss, backward, optimizer) -> inclusive time per step, ms.
    top_ops
        ``(op name, category, self ms per step, calls per step)`` for the most expensive operations.
    """

    step_ms: float
    category_ms: dict[str, float]
    category_gflops: dict[str, float]
    phase_ms: dict[str, float]
    top_ops: list[tuple[str, str, float, float]]


@dataclass
class RunResult:
    """Measurements of one :class:`RunSpec` (FLOPs per image, memory in MiB, times in seconds).

    ``cpu_share`` is the process's CPU time (all threads) during the timed steps over ``wall time * threads``:
    near 1 when the requested cores were available, lower when other processes took them (OpenMP threads
    that spin while waiting also count as busy, so it can only overstate what the step obtained).
    ``built_rss_mib`` is the RSS after building model, loss, optimizer and batch, before the first step;
    ``rss_growth_mib`` is ``peak_rss_mib - built_rss_mib``: optimizer state, activations and allocator caches.
    """

    spec: RunSpec
    parameters: int
    step_seconds: list[float]
    median_step_s: float
    images_per_s: float
    train_flops_per_image: float
    forward_flops_per_image: float
    forward_flops_by_part: dict[str, float]
    peak_rss_mib: float
    built_rss_mib: float
    rss_growth_mib: float
    hwm_reset: bool
    cpu_share: float
    profile: ProfileBreakdown | None = None

    def mfu(self, peak_flops_per_s: float) -> float:
        """Model-FLOP utilisation: achieved training FLOP/s divided by ``peak_flops_per_s``.

        The project's MFU divides by the fp32 GEMM peak of the same run, whatever the row's precision; a bf16
        row divided by the bf16 GEMM peak says how close it comes to what bf16 matrix products can reach.
        """
        return self.train_flops_per_image * self.images_per_s / peak_flops_per_s


# ----------------------------------------------------------------------------------------------- counting


def _cpu_sdpa_flop(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flop(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one that F.scaled_dot_product_attention
# dispatches to; without these entries every attention FLOP on CPU would be silently dropped.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def flop_category(op_name: str) -> str:
    """Profile category (see :func:`op_category`) of a FLOP-counted operator such as ``aten.addmm``."""
    name = str(op_name)
    return op_category("aten::" + name[len("aten.") :] if name.startswith("aten.") else name)


def counted_step(bench: Bench) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """Run one real training step while counting FLOPs.

    Returns
    -------
    tuple
        ``(step FLOPs, model-forward FLOPs, model-forward FLOPs by part, step FLOPs by category)`` for the whole
        batch. Parts are ``encoder`` and each enabled head; categories are those of :func:`flop_category`.

    Notes
    -----
    The split by part is of the forward only: FlopCounterMode attributes FLOPs to modules through their
    ``__call__`` hooks, and the encoder is run through ``forward_features`` (no hook), which leaves its backward
    FLOPs scattered over unrelated module names. The forward split is exact: every head is called as a
    module, and the encoder is the forward total minus the heads.

    The step runs in ``bench.precision`` (it is also the first warm-up step, so it warms up the kernels the
    timed steps use). The counter computes FLOPs from operator shapes, not dtypes, so a bf16 step counts the
    same model FLOPs as an fp32 one; the smoke test checks this.
    """
    bench.optimizer.zero_grad(set_to_none=True)
    forward_counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as step_counter:
        forward_and_loss(bench, forward_counter).backward()
    bench.optimizer.step()
    model = bench.model
    forward_total = forward_counter.get_total_flops()
    by_module = {name: sum(ops.values()) for name, ops in forward_counter.get_flop_counts().items()}
    root = type(model).__name__
    heads = {task: by_module.get(f"{root}.heads.{task}", 0) for task in getattr(model, "tasks", ())}
    parts = {"encoder": forward_total - sum(heads.values()), **heads}
    categories: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    for op, count in step_counter.get_flop_counts().get("Global", {}).items():
        categories[flop_category(str(op))] += count
    return step_counter.get_total_flops(), forward_total, parts, categories


# ------------------------------------------------------------------------------------------------- memory


def _status_kib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return float(line.split()[1])  # "VmHWM:   123456 kB"
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (``VmHWM``) to its current RSS; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # "5" resets the peak RSS (Linux >= 4.0, proc(5))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- profiling


def op_category(name: str, in_optimizer: bool = False) -> str:
    """Category (one of :data:`CATEGORIES`) of a profiler event name such as ``aten::addmm``.

    Everything executed inside the optimizer step is ``optimizer``. Among the other ATen operators: matrix
    products are ``gemm``; CPU attention kernels ``attention``; convolutions (also transposed, and their
    backward) ``conv``; layer/batch/instance norms and their backward ``norm``; copies, fills and
    concatenation ``copy+fill``; every other ATen operator (activations, arithmetic, reductions, indexing,
    views) ``elementwise``. Non-ATen events (autograd engine nodes, profiler annotations) are ``framework``.
    """
    if in_optimizer or name.startswith(("aten::_foreach", "aten::_fused_adam")):
        return "optimizer"
    if not name.startswith("aten::"):
        return "framework"
    op = name[len("aten::") :]
    bare = op.lstrip("_")
    if "attention" in bare:
        return "attention"
    if "conv" in bare or bare in ("im2col", "col2im"):
        return "conv"
    if bare in _GEMM_OPS:
        return "gemm"
    if "norm" in bare:
        return "norm"
    if bare in _COPY_FILL_OPS:
        return "copy+fill"
    return "elementwise"


def profile_breakdown(bench: Bench, steps: int, category_flops: dict[str, int], top: int = 12) -> ProfileBreakdown:
    """Profile ``steps`` training steps and sum self CPU times by category and by phase.

    ``category_flops`` (from :func:`counted_step`, whole batch, one step) is reported as GFLOP per step so the
    caller can relate each category's FLOPs to its time.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step(bench)
    events = list(prof.events())
    in_opt: dict[int, bool] = {}

    def inside_optimizer(event) -> bool:
        key = id(event)
        if key not in in_opt:
            parent = event.cpu_parent
            in_opt[key] = event.name == "bench/optimizer" or (parent is not None and inside_optimizer(parent))
        return in_opt[key]

    category_us = dict.fromkeys(CATEGORIES, 0.0)
    phase_us = dict.fromkeys(PHASES, 0.0)
    per_op: dict[tuple[str, str], list[float]] = {}  # (op, category) -> [self us, calls]
    for event in events:
        self_us = float(event.self_cpu_time_total)
        category = op_category(event.name, inside_optimizer(event))
        category_us[category] += self_us
        stats = per_op.setdefault((event.name, category), [0.0, 0.0])
        stats[0] += self_us
        stats[1] += 1
        if event.name.startswith("bench/"):
            phase_us[event.name[len("bench/") :]] += float(event.cpu_time_total)
    ranked = sorted(per_op.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
    return ProfileBreakdown(
        step_ms=sum(category_us.values()) / 1e3 / steps,
        category_ms={c: v / 1e3 / steps for c, v in category_us.items()},
        category_gflops={c: category_flops.get(c, 0) / 1e9 for c in CATEGORIES},
        phase_ms={p: v / 1e3 / steps for p, v in phase_us.items()},
        top_ops=[(name, cat, stats[0] / 1e3 / steps, stats[1] / steps) for (name, cat), stats in ranked],
    )


# ------------------------------------------------------------------------------------------------ running


def run_config(spec: RunSpec) -> RunResult:
    """Build the model of ``spec`` and measure it in this process (see the module docstring).

    The peak-RSS figures are only per-configuration when the process runs nothing else;
    :mod:`benchmarks.train_throughput` therefore calls this in a fresh subprocess per configuration.
    """
    torch.set_num_threads(spec.threads)
    bench = build_bench(spec)
    built_kib = _status_kib("VmRSS") or 0.0
    step_flops, forward_flops, parts, categories = counted_step(bench)  # also the first warm-up step
    for _ in range(spec.warmup_steps - 1):
        train_step(bench)

    hwm_reset = reset_peak_rss()
    times = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(spec.timed_steps):
        start = time.perf_counter()
        loss = train_step(bench)
        times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{spec.label}: training loss became {float(loss)}")
    cpu_share = (time.process_time() - cpu_start) / ((time.perf_counter() - wall_start) * spec.threads)
    peak_kib = _status_kib("VmHWM") or 0.0

    breakdown = None
    if spec.profile_steps:
        breakdown = profile_breakdown(bench, spec.profile_steps, categories)
    median = statistics.median(times)
    size = spec.batch_size
    return RunResult(
        spec=spec,
        parameters=sum(p.numel() for m in (bench.model, bench.loss_fn) for p in m.parameters()),
        step_seconds=times,
        median_step_s=median,
        images_per_s=size / median,
        train_flops_per_image=step_flops / size,
        forward_flops_per_image=forward_flops / size,
        forward_flops_by_part={k: v / size for k, v in parts.items()},
        peak_rss_mib=peak_kib / 1024.0,
        built_rss_mib=built_kib / 1024.0,
        rss_growth_mib=max(0.0, peak_kib - built_kib) / 1024.0,
        hwm_reset=hwm_reset,
        cpu_share=cpu_share,
        profile=breakdown,
    )


def result_from_dict(data: dict[str, Any]) -> RunResult:
    """Rebuild a :class:`RunResult` from ``dataclasses.asdict`` output (the worker's JSON)."""
    data = dict(data)
    data["spec"] = RunSpec(**data["spec"])
    if data.get("profile") is not None:
        profile_data = dict(data["profile"])
        profile_data["top_ops"] = [tuple(op) for op in profile_data["top_ops"]]
        data["profile"] = ProfileBreakdown(**profile_data)
    return RunResult(**data)
