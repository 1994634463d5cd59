"""Smoke tests of benchmarks/matching_benchmark.py on a minuscule model: fields are filled, FLOPs are counted.

No timing is asserted: the machine is shared, so only positivity and finiteness of measured times are checked.
"""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import benchmarks._shared as shared
import benchmarks.matching_benchmark as mb
import benchmarks.matching_case as mc
import benchmarks.op_meter as om
from strategies.matching import match_and_merge


def _minuscule(heads: str = "cls", clients: int = 2):
    return mc.Case(preset="tiny", clients=clients, heads=heads, image_size=32, depth=1)


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def result():
    return mc.run_case(_minuscule())


def test_run_case_reports_positive_finite_fields(result):
    # Prepare: the module fixture ran the core function for J=2
    # Execute
    rates = (result.ratio, result.gemm_rate, result.whole_rate)
    # Assert
    for value in (
        result.matching_seconds,
        result.matching_cpu_seconds,
        result.fedavg_seconds,
        result.gemm_flops,
        result.gemm_seconds,
        result.instrumented_seconds,
        *rates,
    ):
        assert _positive_finite(value)
    # scipy may be skipped entirely when an assignment is decided without it, so only >= 0 is required here.
    assert math.isfinite(result.lsa_seconds) and result.lsa_seconds >= 0 and result.lsa_calls >= 0
    assert result.gemm_calls > 0 and result.alignments >= 2
    assert result.same_result
    assert set(result.group_seconds) == {*mc.GROUP_TYPES, mc.OUTSIDE}
    assert all(math.isfinite(s) and s >= 0 for s in result.group_seconds.values())
    for kind in ("residual", "mlp", "heads/qk/vo"):
        assert _positive_finite(result.group_seconds[kind])
    assert result.group_seconds["decoder"] == 0.0  # the classification head has no permutation group


def test_matching_undoes_the_permutations(result):
    # Prepare / Execute: clients are randomly permuted noisy copies of the base model
    # Assert: the matching moved units and lands far closer to the base than FedAvg of the same copies
    assert result.residual_moved > 0.5
    assert result.matched_error < 0.5 * result.fedavg_error


def test_meter_counts_the_flops_of_flop_counter_mode():
    # Prepare
    inputs = mc.build_inputs(_minuscule())
    meter, reference = om.OpMeter(), FlopCounterMode(display=False)
    # Execute
    with meter:
        match_and_merge(inputs.updates, inputs.spec, previous=inputs.previous)
    with reference:
        match_and_merge(inputs.updates, inputs.spec, previous=inputs.previous)
    # Assert
    counted_by_both = sum(f for op, f in meter.gemm_flops_by_op.items() if op in ("mm", "addmm", "bmm", "baddbmm"))
    assert meter.gemm_flops > 0
    assert counted_by_both == reference.get_total_flops()


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "expected"),
    [((3, 4), (4, 5), (1, 3, 4, 5)), ((2, 3, 4), (2, 4, 5), (2, 3, 4, 5))],
)
@pytest.mark.parametrize("in_place", [False, True])
def test_meter_counts_a_known_product(shape_a, shape_b, expected, in_place):
    # Prepare
    a, b = torch.ones(shape_a), torch.ones(shape_b)
    out = torch.zeros(*shape_a[:-1], shape_b[-1])
    meter = om.OpMeter()
    # Execute
    with meter:
        if not in_place:
            torch.matmul(a, b)
        elif a.dim() == 2:
            out.addmm_(a, b)
        else:
            out.baddbmm_(a, b)
    # Assert
    assert meter.gemm_flops == 2 * math.prod(expected)
    assert meter.gemm_calls == 1


def test_fedavg_is_the_sample_weighted_mean():
    # Prepare
    arrays = [{"w": np.array([1.0, 2.0]), "n": np.array(4)}, {"w": np.array([4.0, 8.0]), "n": np.array(8)}]
    # Execute
    out = mc.fedavg(arrays, [1, 3])
    # Assert
    np.testing.assert_allclose(out["w"], [3.25, 6.5])
    np.testing.assert_allclose(out["n"], 7.0)


@pytest.mark.parametrize("heads", ["cls", "all"])
def test_group_types_cover_every_solve_item(heads):
    # Prepare
    inputs = mc.build_inputs(_minuscule(heads))
    # Execute
    kinds = {mc.group_type(item.name) for item in inputs.spec.solve_items}
    # Assert
    assert "other" not in kinds
    assert ("decoder" in kinds) == (heads == "all")


@pytest.mark.parametrize(("kwargs", "match"), [({"clients": 0}, "clients"), ({"heads": "seg"}, "heads")])
def test_bad_case_raises(kwargs, match):
    # Prepare
    args = {"preset": "tiny", "clients": 2, **kwargs}
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        mc.Case(**args)


def test_report_and_json_carry_every_case(result, tmp_path):
    # Prepare
    peaks = [shared.measure_gemm_peak(1, sizes=(64,), repeats=1)]
    # Execute
    text = mb.format_report([result], peaks, threads=1)
    record = mb.to_json([result], peaks, threads=1)
    (tmp_path / "out.json").write_text(json.dumps(record))
    # Assert
    assert "tiny J=2" in text and "not in this run" in text
    assert _positive_finite(peaks[0].flops_per_s)
    assert len(record["cases"]) == 1 and _positive_finite(record["cases"][0]["gemm_peak_fraction"])
