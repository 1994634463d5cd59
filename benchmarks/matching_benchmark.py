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

Usage::

    python benchmarks/matching_benchmark.py [--quick] [--threads N] [--json out.json]
        [--case base:8 ...] [--heads cls|all] [--image-size 224] [--noise 0.1] [--single-run]

``--quick`` runs tiny and small with J = 3; the default plan is tiny, small and base with J = 3, 5 and 8;
``--case`` (repeatable) replaces the plan.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # lets the script run from a checkout that was not `pip install`ed

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import strategies.matching.assignment as assignment_module  # noqa: E402
from mtmedformer import TASKS  # noqa: E402
from mtmedformer.config.model import ModelConfig  # noqa: E402
from mtmedformer.models import build_model  # noqa: E402
from strategies.matching import (  # noqa: E402
    ClientUpdate,
    MatchingConfig,
    MergeResult,
    PermutationSpec,
    apply_permutations,
    build_spec,
    match_and_merge,
    random_permutations,
)

HEADS: dict[str, tuple[str, ...]] = {"cls": ("classification",), "all": TASKS}
"""Head sets: the encoder plus the classification head, or all three task heads."""
GROUP_TYPES = ("residual", "mlp", "heads/qk/vo", "decoder", "other")
"""Group types of the per-type timing (``other`` stays empty for MTMedFormer)."""
OUTSIDE = "outside alignment"
NUM_CLASSES = 2
DRIFT = 0.5  # base = init + DRIFT * rms * N(0, 1): biases and norms no longer constant
ZERO_TENSOR_RMS = 0.02  # scale used for all-zero tensors (the ViT weight initialisation std)
FEDAVG_REPEATS = 3
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

_GEMM_OPS = {
    torch.ops.aten.mm: 0,  # op -> position of the first matrix operand in args
    torch.ops.aten.addmm: 1,
    torch.ops.aten.addmm_: 1,  # in-place: FlopCounterMode does not count it
    torch.ops.aten.bmm: 0,
    torch.ops.aten.baddbmm: 1,
    torch.ops.aten.baddbmm_: 1,  # in-place: FlopCounterMode does not count it
}


# --------------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    Attributes
    ----------
    preset
        ViT width preset: ``tiny`` (192 dims), ``small`` (384) or ``base`` (768).
    clients
        Number of clients J (>= 1).
    heads
        ``"cls"`` (encoder + classification head) or ``"all"`` (also segmentation and detection). Default cls.
    image_size
        Image side, pixels (a multiple of ``patch_size``). Default 224.
    patch_size
        ViT patch side, pixels. Default 16.
    depth
        Transformer blocks. Default 12.
    noise
        Client noise std relative to each tensor's RMS. Default 0.1.
    seed
        Seed of the base model, the noise and the permutations. Default 0.

    Raises
    ------
    ValueError
        If a value is out of range.
    """

    preset: str
    clients: int
    heads: str = "cls"
    image_size: int = 224
    patch_size: int = 16
    depth: int = 12
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.heads not in HEADS:
            raise ValueError(f"heads must be one of {sorted(HEADS)}, got {self.heads!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    @property
    def label(self) -> str:
        """Short name, e.g. ``base J=8``."""
        return f"{self.preset} J={self.clients}" + ("" if self.heads == "cls" else f" ({self.heads} heads)")


@dataclass
class Inputs:
    """What one case aggregates.

    Attributes
    ----------
    spec
        Permutation spec of the model.
    previous
        The base model (previous global model, in the global frame).
    updates
        Client id -> permuted noisy copy of ``previous`` with its sample counts.
    """

    spec: PermutationSpec
    previous: dict[str, torch.Tensor]
    updates: dict[str, ClientUpdate]


@dataclass
class GemmPeak:
    """Best ``torch.mm`` rate of square fp32 matrices.

    Attributes
    ----------
    flops_per_s
        Best rate by wall time, at ``size``.
    flops_per_s_cpu
        Best rate by CPU time, ``2 n^3 x threads / process-CPU seconds`` (the rate on idle cores).
    seconds
        Size -> fastest product, wall seconds.
    """

    flops_per_s: float
    size: int
    flops_per_s_cpu: float = 0.0
    seconds: dict[int, float] = field(default_factory=dict)


@dataclass
class CaseResult:
    """Measurements of one case (seconds are wall seconds unless named ``cpu``)."""

    case: Case
    params: int  # floating parameters per client
    threads: int  # torch intra-op threads
    load_average: float  # 1-minute load average when the case started
    matching_seconds: float
    matching_cpu_seconds: float
    fedavg_seconds: float
    fedavg_cpu_seconds: float
    gemm_flops: float
    gemm_seconds: float
    gemm_cpu_seconds: float  # process-CPU seconds (all threads) inside the GEMM kernels
    gemm_calls: int
    instrumented_seconds: float
    single_run: bool  # the matching time is the instrumented call's (no clean call)
    same_result: bool  # the instrumented call found the clean call's permutations
    lsa_seconds: float
    lsa_calls: int
    lsa_by_size: dict[str, list[float]]  # matrix side -> [calls, seconds]
    aten_seconds: float  # instrumented call: seconds inside every ATen op (GEMMs included)
    op_seconds: dict[str, list[float]]  # ATen op -> [calls, seconds], the 12 slowest
    gemm_shapes: dict[str, list[float]]  # "b x m x k x n" -> [calls, seconds, flops], the slowest first
    group_seconds: dict[str, float]  # GROUP_TYPES and OUTSIDE -> seconds
    sweeps_per_alignment: float
    alignments: int
    iterations: int
    residual_moved: float  # mean fraction of residual units the matching moved
    matched_error: float  # ||encoder - base|| / ||base||, matched
    fedavg_error: float  # the same for FedAvg

    @property
    def ratio(self) -> float:
        """Matching time over FedAvg time."""
        return self.matching_seconds / self.fedavg_seconds

    @property
    def gemm_rate(self) -> float:
        """FLOP/s inside the GEMM kernels."""
        return self.gemm_flops / self.gemm_seconds if self.gemm_seconds > 0 else 0.0

    @property
    def gemm_rate_cpu(self) -> float:
        """FLOP/s inside the GEMM kernels by CPU time, ``flops * threads / CPU seconds``: the rate on idle cores."""
        return self.gemm_flops * self.threads / self.gemm_cpu_seconds if self.gemm_cpu_seconds > 0 else 0.0

    @property
    def whole_rate(self) -> float:
        """GEMM FLOPs over the clean call's wall time."""
        return self.gemm_flops / self.matching_seconds

    @property
    def python_seconds(self) -> float:
        """Instrumented time in neither an ATen op nor an assignment: Python, dispatch and meter overhead."""
        return max(0.0, self.instrumented_seconds - self.aten_seconds - self.lsa_seconds)


# --------------------------------------------------------------------------------------------------- inputs


def _rms(value: torch.Tensor) -> float:
    rms = float(value.double().pow(2).mean().sqrt()) if value.numel() else 0.0
    return rms if rms > 0 else ZERO_TENSOR_RMS


def _perturbed(state: Mapping[str, torch.Tensor], scale: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every floating tensor plus ``scale * rms * N(0, 1)``; integer buffers copied."""
    out = {}
    for name, value in state.items():
        if value.is_floating_point() and scale > 0:
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            out[name] = value + (scale * _rms(value)) * noise
        else:
            out[name] = value.clone()
    return out


def build_inputs(case: Case) -> Inputs:
    """Build the base model and its J permuted noisy copies (see the module docstring)."""
    cfg = ModelConfig(preset=case.preset, depth=case.depth, patch_size=case.patch_size, tasks=HEADS[case.heads])
    torch.manual_seed(case.seed)
    model = build_model(cfg, case.image_size, NUM_CLASSES)
    spec = build_spec(model)
    generator = torch.Generator().manual_seed(case.seed + 1)
    state = {name: value.detach() for name, value in model.state_dict().items()}
    base = _perturbed(state, DRIFT, generator)
    del model, state
    updates = {}
    for j in range(case.clients):
        noisy = _perturbed(base, case.noise, generator)
        permuted = apply_permutations(noisy, spec, random_permutations(spec, generator))
        n = 100 + 50 * j
        updates[f"client-{j}"] = ClientUpdate(permuted, n, dict.fromkeys(cfg.tasks, n))
    return Inputs(spec, base, updates)


# --------------------------------------------------------------------------------------------------- FedAvg


def fedavg(arrays: Sequence[Mapping[str, np.ndarray]], counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Weighted average of state dicts with the arithmetic of Flower's ``aggregate_arrayrecords`` (flwr 1.42).

    Parameters
    ----------
    arrays
        One ``{key: array}`` per client.
    counts
        Sample counts ``n_j`` (weights ``n_j / sum n``).

    Returns
    -------
    dict[str, np.ndarray]
        ``sum_j (n_j / sum n) x_j`` per key (integer arrays come back as float64, as in Flower).
    """
    total = sum(counts)
    out: dict[str, np.ndarray] = {}
    for record, n in zip(arrays, counts, strict=True):
        weight = n / total
        for key, value in record.items():
            if key not in out:
                out[key] = value * weight
            else:
                out[key] += value * weight
    return out


# --------------------------------------------------------------------------------------------------- meters


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


def measure_gemm_peak(threads: int, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> GemmPeak:
    """Best ``torch.mm`` rate of square fp32 matrices with ``threads`` threads (``2 n^3`` FLOPs per product).

    Each size gets one untimed product, then ``repeats`` timed ones; the fastest over all sizes and repeats
    defines the peak (by wall time, and by CPU time), so competing processes lower it least.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = GemmPeak(flops_per_s=0.0, size=0)
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            out = torch.empty(n, n)
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


# --------------------------------------------------------------------------------------------------- one case


def group_type(item_name: str) -> str:
    """Group type of a solve item of MTMedFormer's spec (see ``strategies/matching/model_spec.py``)."""
    if item_name == "encoder.residual":
        return "residual"
    if item_name.startswith("encoder.blocks.") and item_name.endswith(".mlp"):
        return "mlp"
    if item_name.startswith("encoder.blocks.") and item_name.endswith(".attn.heads"):
        return "heads/qk/vo"
    if item_name.startswith("heads."):
        return "decoder"
    return "other"


def group_seconds(result: MergeResult, spec: PermutationSpec) -> dict[str, float]:
    """Seconds per group type from the diagnostics, plus the rest of the call under :data:`OUTSIDE`."""
    out = dict.fromkeys(GROUP_TYPES, 0.0)
    for item in spec.solve_items:
        out[group_type(item.name)] += result.diagnostics.groups[item.name].seconds
    out[OUTSIDE] = max(0.0, result.diagnostics.seconds - sum(out.values()))
    return out


def relative_distance(state: Mapping[str, Any], base: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """``||state - base|| / ||base||`` over ``names`` (float64)."""
    num = den = 0.0
    for name in names:
        ref = base[name].double()
        num += float((torch.as_tensor(state[name]).double() - ref).pow(2).sum())
        den += float(ref.pow(2).sum())
    return math.sqrt(num / den) if den > 0 else 0.0


def _slowest(table: Mapping[str, list[float]], column: int, keep: int) -> dict[str, list[float]]:
    return dict(sorted(table.items(), key=lambda kv: -kv[1][column])[:keep])


def run_case(case: Case, config: MatchingConfig | None = None, single_run: bool = False) -> CaseResult:
    """Build the inputs of ``case`` and measure matching (clean and instrumented) and FedAvg on them.

    With ``single_run`` the clean call is skipped and the instrumented call gives the matching time too (its meter
    adds a few microseconds per ATen op and the wrapped assignments; :attr:`CaseResult.same_result` is then True).
    """
    config = config or MatchingConfig()
    load = os.getloadavg()[0]
    inputs = build_inputs(case)
    updates, spec = inputs.updates, inputs.spec
    gc.collect()

    result = None
    if not single_run:
        began, began_cpu = time.perf_counter(), time.process_time()
        result = match_and_merge(updates, spec, previous=inputs.previous, config=config)
        matching_seconds, matching_cpu = time.perf_counter() - began, time.process_time() - began_cpu

    arrays = [{k: v.numpy() for k, v in u.state.items()} for u in updates.values()]
    counts = [u.num_examples for u in updates.values()]
    walls, cpus = [], []
    for _ in range(FEDAVG_REPEATS):
        began, began_cpu = time.perf_counter(), time.process_time()
        averaged = fedavg(arrays, counts)
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - began_cpu)

    meter, lsa = OpMeter(), {}
    gc.collect()
    with timed_assignments(lsa), meter:
        began, began_cpu = time.perf_counter(), time.process_time()
        counted = match_and_merge(updates, spec, previous=inputs.previous, config=config)
        instrumented, instrumented_cpu = time.perf_counter() - began, time.process_time() - began_cpu
    if result is None:
        result, matching_seconds, matching_cpu = counted, instrumented, instrumented_cpu
    same = all(
        torch.equal(perm, counted.permutations[cid][group])
        for cid, perms in result.permutations.items()
        for group, perm in perms.items()
    )

    encoder = [n for n, v in inputs.previous.items() if v.is_floating_point() and spec.task_of(n) is None]
    diag = result.diagnostics
    aligned = [cid for cid, count in diag.alignments.items() if count > 0]
    return CaseResult(
        case=case,
        params=sum(v.numel() for v in inputs.previous.values() if v.is_floating_point()),
        threads=torch.get_num_threads(),
        load_average=load,
        matching_seconds=matching_seconds,
        matching_cpu_seconds=matching_cpu,
        fedavg_seconds=statistics.median(walls),
        fedavg_cpu_seconds=statistics.median(cpus),
        gemm_flops=meter.gemm_flops,
        gemm_seconds=meter.gemm_seconds,
        gemm_cpu_seconds=meter.gemm_cpu_seconds,
        gemm_calls=meter.gemm_calls,
        instrumented_seconds=instrumented,
        single_run=single_run,
        same_result=same,
        lsa_seconds=sum(seconds for _, seconds in lsa.values()),
        lsa_calls=int(sum(calls for calls, _ in lsa.values())),
        lsa_by_size=_slowest(lsa, 1, len(lsa)),
        aten_seconds=sum(seconds for _, seconds in meter.op_seconds.values()),
        op_seconds=_slowest(meter.op_seconds, 1, 12),
        gemm_shapes=_slowest(meter.gemm_shapes, 1, 8),
        group_seconds=group_seconds(result, spec),
        sweeps_per_alignment=sum(diag.sweeps[c] for c in aligned) / max(1, sum(diag.alignments[c] for c in aligned)),
        alignments=sum(diag.alignments.values()),
        iterations=diag.iterations,
        residual_moved=diag.groups["encoder.residual"].mean_moved,
        matched_error=relative_distance(result.state_dict, inputs.previous, encoder),
        fedavg_error=relative_distance(averaged, inputs.previous, encoder),
    )


# --------------------------------------------------------------------------------------------------- report


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


def _table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_report(results: list[CaseResult], peaks: list[GemmPeak], threads: int) -> str:
    """Human-readable report of a run."""
    peak, peak_cpu = max(p.flops_per_s for p in peaks), max(p.flops_per_s_cpu for p in peaks)
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
    out.append(_table(TIME_COLUMNS, rows))
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
    out.append(_table(GROUP_COLUMNS, rows))
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
    peak, peak_cpu = max(p.flops_per_s for p in peaks), max(p.flops_per_s_cpu for p in peaks)
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
