"""One case of the matching benchmark: J permuted noisy copies of one model, merged by matching and by FedAvg.

:func:`build_inputs` makes the inputs of a :class:`Case` (see :mod:`benchmarks.matching_benchmark` for what is
measured and why), :func:`run_case` times :func:`strategies.matching.match_and_merge` (a clean call and one
instrumented by :class:`benchmarks.op_meter.OpMeter`) and FedAvg on them and returns a :class:`CaseResult`.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from benchmarks.op_meter import OpMeter, timed_assignments
from mtmedformer import TASKS
from mtmedformer.config.model import ModelConfig
from mtmedformer.models import build_model
from strategies.matching import (
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
