"""Smoke tests of benchmarks/train_throughput.py on a minuscule model: fields are filled, FLOPs are counted.

No timing is asserted: the machine is shared, so only positivity and finiteness of measured times are checked.
"""

import json
import math
import re
from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import benchmarks._shared as shared
import benchmarks.throughput_bench as tb
import benchmarks.throughput_measure as tm
import benchmarks.train_throughput as tt


def _minuscule(heads: str, profile_steps: int = 0, **variant):
    return tb.RunSpec(
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
    [
        ("all", {}),
        ("cls", {}),
        ("all", {"precision": "bf16"}),
        ("cls", {"precision": "bf16", "adamw": "fused"}),
        ("cls", {"adamw": "foreach"}),
    ],
)
def test_run_config_reports_positive_finite_fields(heads, variant):
    # Prepare
    spec = _minuscule(heads, profile_steps=1, **variant)
    # Execute
    result = tm.run_config(spec)
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
    # the peak is over the timed steps only (its mark is reset after warm-up), so it may sit below the RSS
    # measured right after building when warm-up memory was released: growth is clipped at 0, not negative
    assert result.built_rss_mib > 0 and result.peak_rss_mib > 0
    assert result.rss_growth_mib == pytest.approx(max(0.0, result.peak_rss_mib - result.built_rss_mib))
    assert _positive_finite(result.cpu_share)
    # a training step does the forward plus a backward of at least the same size
    assert result.train_flops_per_image >= 2 * result.forward_flops_per_image
    assert set(result.forward_flops_by_part) == {"encoder", *tb.HEADS[heads]}
    assert sum(result.forward_flops_by_part.values()) == pytest.approx(result.forward_flops_per_image)
    assert result.forward_flops_by_part["encoder"] > 0
    assert _positive_finite(result.mfu(1e12))
    profile = result.profile
    assert _positive_finite(profile.step_ms)
    assert set(profile.category_ms) == set(tm.CATEGORIES) and all(v >= 0 for v in profile.category_ms.values())
    assert all(_positive_finite(profile.phase_ms[p]) for p in tm.PHASES)
    assert profile.category_gflops["gemm"] > 0 and profile.category_gflops["attention"] > 0
    assert tm.result_from_dict(asdict(result)) == result


def test_bf16_step_counts_the_same_model_flops_as_fp32():
    # Prepare: the counter works from shapes, so autocast must not change the model FLOPs of a step
    benches = {p: tb.build_bench(_minuscule("all", precision=p)) for p in tb.PRECISIONS}
    # Execute
    counts = {p: tm.counted_step(bench) for p, bench in benches.items()}
    # Assert
    assert counts["bf16"] == counts["fp32"]
    assert counts["fp32"][0] > 0


@pytest.mark.parametrize(("precision", "model_dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_train_step_uses_the_engines_precision_path(precision, model_dtype):
    # Prepare: record the dtype of the model's logits and of what the loss receives
    bench = tb.build_bench(_minuscule("cls", precision=precision))
    seen = {}

    def model_hook(module, args, outputs) -> None:  # a hook returning non-None would replace the outputs
        seen["model"] = outputs["classification"].dtype

    def loss_hook(module, args) -> None:
        seen["loss"] = args[0]["classification"].dtype

    bench.model.register_forward_hook(model_hook)
    bench.loss_fn.register_forward_pre_hook(loss_hook)
    # Execute
    loss = tb.train_step(bench)
    # Assert: forward under autocast_context(precision), loss on float32 outputs (engine/loop.py::train_epoch)
    assert seen == {"model": model_dtype, "loss": torch.float32}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in bench.model.parameters())


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


def test_worker_process_runs_as_a_module_from_any_folder(tmp_path, monkeypatch):
    # Prepare: a caller outside the repository (the worker must still find the benchmarks package)
    monkeypatch.chdir(tmp_path)
    spec = _minuscule("cls")
    # Execute
    result = tt.run_in_subprocess(spec)
    # Assert
    assert result.spec == spec and _positive_finite(result.images_per_s) and result.peak_rss_mib > 0


def test_failed_worker_is_reported_with_its_stderr():
    with pytest.raises(RuntimeError, match=r"tiny/32px/cls/b2/fp32 failed \(exit 1\)") as error:
        tt.parse_worker_output(_minuscule("cls"), 1, "", "Traceback ...\nMemoryError")
    assert "MemoryError" in str(error.value)


@pytest.mark.parametrize(("dtype", "name"), [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_gemm_peak_is_positive(dtype, name):
    # Execute
    peak = shared.measure_gemm_peak(threads=1, sizes=(64, 128), repeats=2, dtype=dtype)
    # Assert
    assert _positive_finite(peak.flops_per_s) and peak.size in (64, 128) and set(peak.seconds) == {64, 128}
    assert peak.dtype == name


def test_cpu_attention_flops_are_counted_hand_worked():
    # Prepare: one head, 4 tokens of width 8 -> QK^T and PV are 2 * 4*4*8 FLOPs each. The backward is five such
    # products in torch's convention (the flash kernel recomputes QK^T, then dV, dP, dQ, dK).
    query = torch.randn(1, 1, 4, 8, requires_grad=True)
    # Execute
    with FlopCounterMode(display=False, custom_mapping=tm.CPU_ATTENTION_FLOPS) as forward:
        out = F.scaled_dot_product_attention(query, query, query)
    with FlopCounterMode(display=False, custom_mapping=tm.CPU_ATTENTION_FLOPS) as backward:
        out.sum().backward()
    # Assert
    assert forward.get_total_flops() == 2 * (2 * 4 * 4 * 8)
    assert backward.get_total_flops() == 5 * (2 * 4 * 4 * 8)


def _result(spec, images_per_s: float, train_flops_per_image: float = 2e9) -> tm.RunResult:
    return tm.RunResult(
        spec=spec,
        parameters=1,
        step_seconds=[spec.batch_size / images_per_s],
        median_step_s=spec.batch_size / images_per_s,
        images_per_s=images_per_s,
        train_flops_per_image=train_flops_per_image,
        forward_flops_per_image=train_flops_per_image / 3,
        forward_flops_by_part={"encoder": train_flops_per_image / 3},
        peak_rss_mib=1.0,
        built_rss_mib=1.0,
        rss_growth_mib=0.0,
        hwm_reset=True,
        cpu_share=1.0,
    )


def _peak(gflops: float, dtype: str) -> shared.GemmPeak:
    return shared.GemmPeak(flops_per_s=gflops * 1e9, size=1024, dtype=dtype)


def test_mfu_hand_worked():
    # Prepare: 2 GFLOP per image at 10 images/s is 20 GFLOP/s
    result = _result(_minuscule("cls"), images_per_s=10.0)
    # Execute / Assert
    assert result.mfu(100e9) == pytest.approx(0.2)


def _main_table_rows(report: str) -> list[dict[str, str]]:
    lines = report.splitlines()
    start = lines.index("Training throughput (median of timed steps), model FLOPs, MFU and memory") + 1
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)))
    return rows


def test_report_gives_bf16_rows_mfu_against_both_peaks_hand_worked():
    # Prepare: peaks fp32 100 (best of 80, 100) and bf16 400 (best of 400, 300) GFLOP/s; 2 GFLOP per image.
    # fp32 at 10 img/s = 20 GFLOP/s; bf16 at 40 img/s = 80 GFLOP/s -> 80 % of the fp32 peak, 20 % of the bf16 peak.
    fp32 = _minuscule("cls")
    results = [_result(fp32, 10.0), _result(replace(fp32, precision="bf16"), 40.0)]
    fp32_peaks = [_peak(80, "float32"), _peak(100, "float32")]
    bf16_peaks = [_peak(400, "bfloat16"), _peak(300, "bfloat16")]
    # Execute
    report = tt.format_report(results, fp32_peaks, bf16_peaks, threads=1)
    payload = tt.json_payload(results, fp32_peaks, bf16_peaks, threads=1, load_averages=(0.0, 0.0))
    # Assert
    rows = {row["precision"]: row for row in _main_table_rows(report)}
    assert rows["fp32"]["MFU % (fp32 peak)"] == "20.0" and rows["fp32"]["MFU % (bf16 peak)"] == "-"
    assert rows["bf16"]["MFU % (fp32 peak)"] == "80.0" and rows["bf16"]["MFU % (bf16 peak)"] == "20.0"
    assert "'MFU % (fp32 peak)' uses 100.0 GFLOP/s" in report and "'MFU % (bf16 peak)' uses 400.0 GFLOP/s" in report
    assert re.search(r"tiny/32px/cls/b2\s+10\.00\s+40\.00\s+4\.00", report)  # bf16 vs fp32 table: 4x speed-up
    mfu = [(r["spec"]["precision"], r["mfu_fp32_peak"], r["mfu_bf16_peak"]) for r in payload["results"]]
    assert mfu == [("fp32", pytest.approx(0.2), None), ("bf16", pytest.approx(0.8), pytest.approx(0.2))]
    assert payload["fp32_peak_flops_per_s"] == 100e9 and payload["bf16_peak_flops_per_s"] == 400e9


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
    assert tm.op_category(name, in_optimizer) == expected


@pytest.mark.parametrize(
    "op", ["aten.addmm", "aten.convolution_backward", "aten._scaled_dot_product_flash_attention_for_cpu"]
)
def test_flop_categories_are_the_profile_categories(op):
    assert tm.flop_category(op) in ("gemm", "conv", "attention")


def test_make_batch_mask_and_box_describe_the_same_lesion():
    # Execute
    batch = tb.make_batch(batch_size=3, image_size=32, seed=1)
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
        ({"precision": "fp16"}, "precision must be one of"),
    ],
)
def test_bad_spec_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tb.RunSpec(**kwargs)


def test_quick_plan_covers_both_presets_head_sets_and_precisions_at_128px():
    # Execute
    plan = tt.benchmark_plan(quick=True, threads=2)
    # Assert
    expected = {(p, h, q) for p in ("tiny", "small") for h in tb.HEADS for q in tb.PRECISIONS}
    assert {(s.preset, s.heads, s.precision) for s in plan} == expected and len(plan) == len(expected)
    assert {s.image_size for s in plan} == {128}
    assert sorted(s.precision for s in plan if s.profile_steps > 0) == ["bf16", "fp32"]


@pytest.mark.parametrize(
    ("precisions", "expected"),
    [
        # default: every fp32 row of the full plan, plus bf16 rows at 128 px
        (tb.PRECISIONS, {("fp32", 128): 4, ("fp32", 224): 4, ("bf16", 128): 4}),
        (("fp32",), {("fp32", 128): 4, ("fp32", 224): 4}),
        (("bf16",), {("bf16", 128): 4}),
    ],
)
def test_full_plan_rows_by_precision_and_size(precisions, expected):
    # Execute
    plan = tt.benchmark_plan(quick=False, threads=2, precisions=precisions)
    # Assert
    counts = {}
    for s in plan:
        counts[(s.precision, s.image_size)] = counts.get((s.precision, s.image_size), 0) + 1
    assert counts == expected
    assert len({s.label for s in plan}) == len(plan)


@pytest.mark.parametrize("precisions", [(), ("fp16",)])
def test_plan_rejects_unknown_precisions(precisions):
    with pytest.raises(ValueError, match="precisions must be"):
        tt.benchmark_plan(quick=True, threads=1, precisions=precisions)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], ["fp32", "bf16"]), (["--precision", "bf16"], ["bf16"]), (["--precision", "fp32", "bf16"], ["fp32", "bf16"])],
)
def test_precision_option(argv, expected):
    assert tt.parse_args(argv).precision == expected
