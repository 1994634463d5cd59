"""Smoke tests of benchmarks/train_throughput.py on a minuscule model: fields are filled, FLOPs are counted.

No timing is asserted: the machine is shared, so only positivity and finiteness of measured times are checked.
"""

import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import benchmarks.train_throughput as tt


def _minuscule(heads: str, profile_steps: int = 0, **variant):
    return tt.RunSpec(
        preset="tiny",
        image_size=32,
        batch_size=2,
        heads=heads,
        depth=1,
        warmup_steps=1,
        timed_steps=2,
        threads=1,
        profile_steps=profile_steps,
        **variant,
    )


def _positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


@pytest.mark.parametrize(
    ("heads", "variant"),
    [("all", {}), ("cls", {}), ("all", {"bf16": True, "adamw": "fused"}), ("cls", {"adamw": "foreach"})],
)
def test_run_config_reports_positive_finite_fields(heads, variant):
    # Prepare
    spec = _minuscule(heads, profile_steps=1, **variant)
    # Execute
    result = tt.run_config(spec)
    # Assert
    assert len(result.step_seconds) == 2 and all(_positive_finite(t) for t in result.step_seconds)
    for value in (
        result.median_step_s,
        result.images_per_s,
        result.train_flops_per_image,
        result.forward_flops_per_image,
        result.peak_rss_mib,
        result.parameters,
    ):
        assert _positive_finite(value)
    assert math.isfinite(result.rss_growth_mib) and result.rss_growth_mib >= 0
    assert 0 < result.built_rss_mib <= result.peak_rss_mib
    assert _positive_finite(result.cpu_share)
    # a training step does the forward plus a backward of at least the same size
    assert result.train_flops_per_image >= 2 * result.forward_flops_per_image
    assert set(result.forward_flops_by_part) == {"encoder", *tt.HEADS[heads]}
    assert sum(result.forward_flops_by_part.values()) == pytest.approx(result.forward_flops_per_image)
    assert result.forward_flops_by_part["encoder"] > 0
    assert _positive_finite(result.mfu(1e12))
    profile = result.profile
    assert _positive_finite(profile.step_ms)
    assert set(profile.category_ms) == set(tt.CATEGORIES) and all(v >= 0 for v in profile.category_ms.values())
    assert all(_positive_finite(profile.phase_ms[p]) for p in tt.PHASES)
    assert profile.category_gflops["gemm"] > 0 and profile.category_gflops["attention"] > 0
    assert tt.result_from_dict(asdict(result)) == result


def test_worker_mode_prints_a_result_the_parent_reads(capsys):
    # Prepare: the worker protocol in-process (a real subprocess would spend most of its time importing torch)
    spec = _minuscule("cls")
    # Execute
    status = tt.main(["--worker", json.dumps(asdict(spec))])
    result = tt.parse_worker_output(spec, status, capsys.readouterr().out, "")
    # Assert
    assert status == 0 and result.spec == spec
    assert _positive_finite(result.images_per_s) and _positive_finite(result.peak_rss_mib)
    assert result.profile is None


def test_failed_worker_is_reported_with_its_stderr():
    with pytest.raises(RuntimeError, match=r"tiny/32px/cls/b2 failed \(exit 1\)") as error:
        tt.parse_worker_output(_minuscule("cls"), 1, "", "Traceback ...\nMemoryError")
    assert "MemoryError" in str(error.value)


def test_gemm_peak_is_positive():
    # Execute
    peak = tt.measure_gemm_peak(threads=1, sizes=(64, 128), repeats=2)
    # Assert
    assert _positive_finite(peak.flops_per_s) and peak.size in (64, 128) and set(peak.seconds) == {64, 128}


def test_cpu_attention_flops_are_counted_hand_worked():
    # Prepare: one head, 4 tokens of width 8 -> QK^T and PV are 2 * 4*4*8 FLOPs each. The backward is five such
    # products in torch's convention (the flash kernel recomputes QK^T, then dV, dP, dQ, dK).
    query = torch.randn(1, 1, 4, 8, requires_grad=True)
    # Execute
    with FlopCounterMode(display=False, custom_mapping=tt.CPU_ATTENTION_FLOPS) as forward:
        out = F.scaled_dot_product_attention(query, query, query)
    with FlopCounterMode(display=False, custom_mapping=tt.CPU_ATTENTION_FLOPS) as backward:
        out.sum().backward()
    # Assert
    assert forward.get_total_flops() == 2 * (2 * 4 * 4 * 8)
    assert backward.get_total_flops() == 5 * (2 * 4 * 4 * 8)


def test_mfu_hand_worked():
    # Prepare: 2 GFLOP per image at 10 images/s is 20 GFLOP/s
    result = tt.RunResult(
        spec=_minuscule("cls"),
        parameters=1,
        step_seconds=[0.2],
        median_step_s=0.2,
        images_per_s=10.0,
        train_flops_per_image=2e9,
        forward_flops_per_image=1e9,
        forward_flops_by_part={"encoder": 1e9},
        peak_rss_mib=1.0,
        built_rss_mib=1.0,
        rss_growth_mib=0.0,
        hwm_reset=True,
        cpu_share=1.0,
    )
    # Execute / Assert
    assert result.mfu(100e9) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("name", "in_optimizer", "expected"),
    [
        ("aten::addmm", False, "gemm"),
        ("aten::mm", False, "gemm"),
        ("aten::convolution_backward", False, "conv"),
        ("aten::mkldnn_convolution", False, "conv"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", False, "attention"),
        ("aten::native_layer_norm_backward", False, "norm"),
        ("aten::native_batch_norm", False, "norm"),
        ("aten::copy_", False, "copy+fill"),
        ("aten::fill_", False, "copy+fill"),
        ("aten::gelu_backward", False, "elementwise"),
        ("aten::mul_", True, "optimizer"),
        ("aten::_foreach_mul_", False, "optimizer"),
        ("autograd::engine::evaluate_function: AddmmBackward0", False, "framework"),
    ],
)
def test_op_category(name, in_optimizer, expected):
    assert tt.op_category(name, in_optimizer) == expected


@pytest.mark.parametrize(
    "op", ["aten.addmm", "aten.convolution_backward", "aten._scaled_dot_product_flash_attention_for_cpu"]
)
def test_flop_categories_are_the_profile_categories(op):
    assert tt.flop_category(op) in ("gemm", "conv", "attention")


def test_make_batch_mask_and_box_describe_the_same_lesion():
    # Execute
    batch = tt.make_batch(batch_size=3, image_size=32, seed=1)
    # Assert
    assert batch.image.shape == (3, 1, 32, 32) and 0 <= batch.image.min() and batch.image.max() <= 1
    for i in range(3):
        x0, y0, x1, y1 = batch.boxes[i][0].tolist()
        assert batch.mask[i].sum().item() == (x1 - x0) * (y1 - y0)
        assert batch.mask[i, 0, int(y0) : int(y1), int(x0) : int(x1)].all()
    assert batch.has_label.all() and batch.has_mask.all() and batch.has_boxes.all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": "segmentation"}, "heads must be one of"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 0}, "threads"),
        ({"adamw": "fast"}, "adamw must be one of"),
    ],
)
def test_bad_spec_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tt.RunSpec(**kwargs)


def test_quick_plan_covers_both_presets_and_head_sets_at_128px():
    # Execute
    plan = tt.benchmark_plan(quick=True, threads=2)
    # Assert
    assert {(s.preset, s.heads) for s in plan} == {(p, h) for p in ("tiny", "small") for h in tt.HEADS}
    assert {s.image_size for s in plan} == {128}
    assert sum(s.profile_steps > 0 for s in plan) == 1
