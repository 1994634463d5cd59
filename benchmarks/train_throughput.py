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

    python benchmarks/train_throughput.py [--quick] [--threads N] [--json out.json]
        [--steps K] [--small-batch B] [--precision {fp32,bf16} ...] [--adamw {default,foreach,fused}]

By default the plan has fp32 rows for every configuration and bf16 rows at 128 px. ``--adamw`` swaps the
optimizer kernel; without it the step uses the optimizer training builds. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # lets the script run from a checkout that was not `pip install`ed

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

from mtmedformer import TASKS  # noqa: E402
from mtmedformer.config import ExperimentConfig, config_from_dict  # noqa: E402
from mtmedformer.data.batch import Batch  # noqa: E402
from mtmedformer.engine.loop import as_float32, autocast_context  # noqa: E402
from mtmedformer.engine.optim import build_optimizer  # noqa: E402
from mtmedformer.engine.setup import build_model_and_loss  # noqa: E402

HEADS: dict[str, tuple[str, ...]] = {"all": TASKS, "cls": ("classification",)}
"""Benchmark head sets: all three task heads, or the encoder plus the classification head only."""

ADAMW_IMPLS = ("default", "foreach", "fused")
"""AdamW implementations: ``default`` is what :func:`mtmedformer.engine.optim.build_optimizer` builds (the
optimizer training uses; fused AdamW today), the others re-make it with ``foreach=True`` / ``fused=True``."""

PRECISIONS = ("fp32", "bf16")
"""Training precisions, the values of ``train.precision`` (see :func:`mtmedformer.engine.loop.autocast_context`)."""

BF16_SIZES = (128,)
"""Image sizes of the default plan's bf16 rows (fp32 rows cover every size of the plan)."""

CATEGORIES = ("gemm", "attention", "conv", "norm", "elementwise", "copy+fill", "optimizer", "framework")
"""Profile categories; ``norm`` + ``elementwise`` is the usual "norm+elementwise" group."""
PHASES = ("forward", "loss", "backward", "optimizer")
RESULT_PREFIX = "BENCH_RESULT "  # marks the worker's JSON line on stdout
MIB = 1024.0 * 1024.0

_GEMM_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "addbmm"}
_COPY_FILL_OPS = {"copy_", "to_copy", "fill_", "zero_", "cat", "clone", "contiguous", "stack", "index_put_impl_"}


# --------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RunSpec:
    """One benchmark configuration.

    Attributes
    ----------
    preset
        ViT width preset (``tiny`` or ``small``; ``base`` works but is slow on a CPU).
    image_size
        Side of the square input images, pixels (a multiple of ``patch_size``).
    batch_size
        Images per training step.
    heads
        ``"all"`` (classification, segmentation, detection) or ``"cls"`` (encoder + classification head).
    patch_size
        ViT patch side, pixels. Default 16.
    depth
        Transformer blocks; None = the preset's depth (12).
    warmup_steps
        Untimed steps before timing; the first one is the FLOP-counted step. Default 2.
    timed_steps
        Timed steps; throughput uses their median. Default 5.
    threads
        ``torch.set_num_threads`` value. Default 1.
    profile_steps
        Extra steps profiled with ``torch.profiler`` after timing (0 = no profile). Default 0.
    seed
        Seeds the model initialisation and the random batch. Default 0.
    precision
        ``train.precision`` of the step, one of :data:`PRECISIONS`: ``"fp32"`` (default) or ``"bf16"`` (the
        model forward under bfloat16 autocast, outputs cast back to float32 for the loss; weights, gradients and
        the optimizer stay float32), exactly as :func:`mtmedformer.engine.loop.train_epoch` does it.
    adamw
        AdamW implementation, one of :data:`ADAMW_IMPLS`. Default ``"default"`` (what
        :func:`mtmedformer.engine.optim.build_optimizer` builds today).
    """

    preset: str = "tiny"
    image_size: int = 128
    batch_size: int = 32
    heads: str = "all"
    patch_size: int = 16
    depth: int | None = None
    warmup_steps: int = 2
    timed_steps: int = 5
    threads: int = 1
    profile_steps: int = 0
    seed: int = 0
    precision: str = "fp32"
    adamw: str = "default"

    def __post_init__(self) -> None:
        if self.heads not in HEADS:
            raise ValueError(f"heads must be one of {list(HEADS)}, got {self.heads!r}")
        for name in ("image_size", "batch_size", "patch_size", "warmup_steps", "timed_steps", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.profile_steps < 0:
            raise ValueError(f"profile_steps must be >= 0, got {self.profile_steps}")
        if self.adamw not in ADAMW_IMPLS:
            raise ValueError(f"adamw must be one of {list(ADAMW_IMPLS)}, got {self.adamw!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    @property
    def optimizer(self) -> str:
        """Optimizer column: ``adamw`` (what training builds) or ``adamw-foreach`` / ``adamw-fused``."""
        return "adamw" if self.adamw == "default" else f"adamw-{self.adamw}"

    @property
    def config(self) -> str:
        """The configuration without its precision, e.g. ``tiny/128px/all/b32`` (``/adamw-fused`` appended when
        the optimizer is not the default); the rows of one configuration in two precisions share it."""
        base = f"{self.preset}/{self.image_size}px/{self.heads}/b{self.batch_size}"
        return base if self.adamw == "default" else f"{base}/{self.optimizer}"

    @property
    def label(self) -> str:
        """Short name with the precision, e.g. ``tiny/128px/all/b32/bf16``."""
        return f"{self.config}/{self.precision}"


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


@dataclass
class GemmPeak:
    """Best measured ``torch.mm`` rate: FLOP/s, the matrix side it was reached at, and the dtype."""

    flops_per_s: float
    size: int
    dtype: str
    seconds: dict[int, float] = field(default_factory=dict)  # matrix side -> best time of one product


# ------------------------------------------------------------------------------------------------ building


def experiment_config(spec: RunSpec) -> ExperimentConfig:
    """Return the experiment config of ``spec``: defaults plus its image size, preset, depth and heads."""
    model: dict[str, Any] = {"preset": spec.preset, "patch_size": spec.patch_size, "tasks": list(HEADS[spec.heads])}
    if spec.depth is not None:
        model["depth"] = spec.depth
    return config_from_dict(
        {"data": {"image_size": spec.image_size}, "model": model, "train": {"batch_size": spec.batch_size}}
    )


def make_batch(batch_size: int, image_size: int, num_classes: int = 2, seed: int = 0) -> Batch:
    """Fabricate a fully annotated random batch.

    Each image ``(1, S, S)`` is uniform noise in ``[0, 1]`` with one square lesion (side ``S/8 .. S/4``, random
    place) that is both its mask and its only box (``xyxy`` pixels, right/bottom edges exclusive); labels are
    uniform in ``[0, num_classes)``; every ``has_*`` flag is True.

    Raises
    ------
    ValueError
        If ``image_size < 8`` (no room for a lesion) or ``batch_size < 1``.
    """
    if image_size < 8 or batch_size < 1:
        raise ValueError(f"need image_size >= 8 and batch_size >= 1, got {image_size} and {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch_size, 1, image_size, image_size, generator=gen)
    mask = torch.zeros(batch_size, 1, image_size, image_size)
    boxes = []
    low, high = max(1, image_size // 8), max(2, image_size // 4)
    for i in range(batch_size):
        side = int(torch.randint(low, high + 1, (1,), generator=gen))
        x0, y0 = (int(v) for v in torch.randint(0, image_size - side + 1, (2,), generator=gen))
        mask[i, 0, y0 : y0 + side, x0 : x0 + side] = 1.0
        boxes.append(torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32))
    flags = torch.ones(batch_size, dtype=torch.bool)
    label = torch.randint(0, num_classes, (batch_size,), generator=gen)
    return Batch(
        image=image,
        label=label,
        mask=mask,
        boxes=boxes,
        has_label=flags,
        has_mask=flags.clone(),
        has_boxes=flags.clone(),
    )


@dataclass
class Bench:
    """What one training step needs: model, hybrid loss, optimizer, a fixed batch, and the precision."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batch: Batch
    precision: str = "fp32"


def build_bench(spec: RunSpec) -> Bench:
    """Build model and loss (:func:`~mtmedformer.engine.setup.build_model_and_loss`), the training optimizer
    (:func:`~mtmedformer.engine.optim.build_optimizer`, re-made with ``spec.adamw``) and a random batch."""
    torch.manual_seed(spec.seed)
    cfg = experiment_config(spec)
    objects = build_model_and_loss(cfg)
    optimizer = build_optimizer({"model": objects.model, "loss": objects.loss_fn}, cfg.train)
    if spec.adamw != "default":
        # Same parameter groups, learning rate and decay as training; only the kernel implementation changes.
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
        optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr, **{spec.adamw: True})
    objects.model.train()
    objects.loss_fn.train()
    batch = make_batch(spec.batch_size, spec.image_size, len(cfg.data.classes), seed=spec.seed)
    return Bench(objects.model, objects.loss_fn, optimizer, batch, spec.precision)


def _forward_and_loss(bench: Bench, counter: FlopCounterMode | None = None) -> torch.Tensor:
    # The engine's own precision path (mtmedformer.engine.loop.train_epoch): forward under autocast_context,
    # outputs cast back to float32 outside it, loss in float32.
    with record_function("bench/forward"), counter if counter is not None else contextlib.nullcontext():
        with autocast_context(bench.precision, bench.batch.image.device):
            outputs = bench.model(bench.batch.image)
    with record_function("bench/loss"):
        return bench.loss_fn(as_float32(outputs), bench.batch).total


def train_step(bench: Bench) -> torch.Tensor:
    """One training step: forward (in ``bench.precision``), hybrid loss, backward, optimizer step.

    Returns the detached total loss. Gradient clipping and the finite-gradient check of the engine are left out.
    """
    bench.optimizer.zero_grad(set_to_none=True)
    total = _forward_and_loss(bench)
    with record_function("bench/backward"):
        total.backward()
    with record_function("bench/optimizer"):
        bench.optimizer.step()
    return total.detach()


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
        _forward_and_loss(bench, forward_counter).backward()
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

    The peak-RSS figures are only per-configuration when the process runs nothing else; :func:`main` therefore
    calls this in a fresh subprocess per configuration.
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


def measure_gemm_peak(
    threads: int, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5, dtype: torch.dtype = torch.float32
) -> GemmPeak:
    """Measure the best ``torch.mm`` rate of square ``dtype`` matrices with ``threads`` threads.

    Each size gets one untimed product and then ``repeats`` timed ones; ``2 n^3`` FLOPs per product; the best
    (shortest) time over all sizes and repeats defines the peak, so competing processes lower it least.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = GemmPeak(flops_per_s=0.0, size=0, dtype=str(dtype).replace("torch.", ""))
        for n in sizes:
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            out = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=out)
            fastest = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                torch.mm(a, b, out=out)
                fastest = min(fastest, time.perf_counter() - start)
            best.seconds[n] = fastest
            rate = 2.0 * n**3 / fastest
            if rate > best.flops_per_s:
                best.flops_per_s, best.size = rate, n
        return best
    finally:
        torch.set_num_threads(previous)


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
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(spec))]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
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


def result_from_dict(data: dict[str, Any]) -> RunResult:
    """Rebuild a :class:`RunResult` from ``dataclasses.asdict`` output (the worker's JSON)."""
    data = dict(data)
    data["spec"] = RunSpec(**data["spec"])
    if data.get("profile") is not None:
        profile_data = dict(data["profile"])
        profile_data["top_ops"] = [tuple(op) for op in profile_data["top_ops"]]
        data["profile"] = ProfileBreakdown(**profile_data)
    return RunResult(**data)


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


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join("{:>" + str(w) + "}" for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*row) for row in rows)])


def best_peak(peaks: list[GemmPeak]) -> float:
    """The highest of several GEMM-peak measurements, FLOP/s: the MFU denominator (the conservative choice).

    Raises
    ------
    ValueError
        If ``peaks`` is empty.
    """
    if not peaks:
        raise ValueError("need at least one GEMM peak measurement")
    return max(p.flops_per_s for p in peaks)


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
    return _table(header, rows)


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
    return _table(header, rows)


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
    return _table(["config", "fwd GFLOP/img", *(f"{p} %" for p in parts)], rows) if rows else None


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
        _table(header, rows),
        "",
        f"Phases: {phases}",
        "",
        "Top operations by self CPU time",
        _table(["op", "category", "ms/step", "%", "calls/step"], top),
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
