"""The benchmarks' shared helpers: GEMM peak, best-peak choice, plain-text tables, atomic JSON."""

import json
import math

import pytest
import torch

from benchmarks._shared import GemmPeak, best_peak, measure_gemm_peak, text_table, write_json


def test_gemm_peak_reports_wall_and_cpu_rates_per_size_and_restores_threads():
    # Prepare
    before = torch.get_num_threads()
    # Execute
    peak = measure_gemm_peak(threads=1, sizes=(32, 64), repeats=2)
    # Assert
    assert peak.size in (32, 64) and set(peak.seconds) == {32, 64} and peak.dtype == "float32"
    assert math.isfinite(peak.flops_per_s) and peak.flops_per_s > 0 and peak.flops_per_s_cpu > 0
    assert peak.flops_per_s == pytest.approx(2.0 * peak.size**3 / peak.seconds[peak.size])
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("kwargs", "match"), [({"threads": 0}, "threads"), ({"sizes": ()}, "sizes")])
def test_gemm_peak_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_gemm_peak(**{"threads": 1, **kwargs})


def test_best_peak_takes_the_highest_by_wall_or_by_cpu_time():
    # Prepare: the wall-time best and the CPU-time best come from different measurements
    peaks = [GemmPeak(10.0, 64, flops_per_s_cpu=40.0), GemmPeak(20.0, 64, flops_per_s_cpu=30.0)]
    # Execute / Assert
    assert best_peak(peaks) == 20.0
    assert best_peak(peaks, by_cpu_time=True) == 40.0
    with pytest.raises(ValueError, match="at least one"):
        best_peak([])


def test_text_table_right_aligns_every_column_hand_worked():
    # Execute
    text = text_table(["a", "long"], [["xyz", "1"], ["", "22"]])
    # Assert
    assert text.splitlines() == ["  a  long", "---  ----", "xyz     1", "       22"]
    assert text_table(["only"], []).splitlines() == ["only", "----"]


def test_write_json_writes_indented_json_and_leaves_no_temporary_file(tmp_path):
    # Execute
    write_json(tmp_path / "sub" / "out.json", {"x": [1, 2]})
    # Assert
    assert json.loads((tmp_path / "sub" / "out.json").read_text()) == {"x": [1, 2]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.json"]
