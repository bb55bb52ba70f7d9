"""The report's "Where the time goes" section (en, th), its stacked-bar PNG, and the CPU-feature notes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import write_report
from bench.report.markdown import render_markdown
from bench.results import RunResult

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "report" / "results.json"


def _run(features: list[str] | None, profile: dict[str, Any] | None = None) -> RunResult:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    data["environment"]["cpu"]["features"] = features
    run = RunResult.from_dict(data)
    if profile is not None:
        cell = next(c for c in run.cells if (c.variant, c.provider) == ("fp32", "cpu"))
        cell.profile = profile  # type: ignore[assignment]
    return run


PROFILE = {
    "total_flops": 35_000_000_000,
    "timed_p50_ms": 350.0,
    "achieved_gflops": 100.0,
    "peak_gflops": 400.0,
    "fraction_of_peak": 0.25,
    "op_types": [
        {"op_type": "MatMul", "calls": 72, "ms": 250.0, "share": 0.71, "flops": 35_000_000_000, "gflops": 140.0},
        {"op_type": "Softmax", "calls": 12, "ms": 50.0, "share": 0.14, "flops": None, "gflops": None},
        {"op_type": "Add", "calls": 100, "ms": 30.0, "share": 0.09, "flops": None, "gflops": None},
        {"op_type": "LayerNormalization", "calls": 25, "ms": 21.0, "share": 0.06, "flops": None, "gflops": None},
    ],
    "nodes": [],
}


def test_no_section_without_profiles_or_notes() -> None:
    text = render_markdown(_run(["avx2", "avx512f", "avx512_vnni", "avx512_fp16"]), "en")
    assert "Where the time goes" not in text


def test_notes_for_variants_this_cpu_cannot_speed_up() -> None:
    run = _run(["avx2", "fma", "avx512f"])  # no VNNI, no native fp16
    en, th = render_markdown(run, "en"), render_markdown(run, "th")
    assert "## Where the time goes" in en and "int8: int8 MatMul without VNNI" in en
    assert "fp16: fp16 on a CPU without native fp16 arithmetic" in en
    assert "## เวลาหมดไปที่ไหน" in th and "VNNI" in th


def test_a_q4_built_without_accuracy_level_4_gets_a_note() -> None:
    run = _run(["avx2", "avx512f", "avx512_vnni", "avx512_fp16"])  # nothing the CPU lacks
    cell = next(c for c in run.cells if (c.variant, c.provider) == ("int8", "cpu"))
    assert cell.model is not None
    cell.variant, cell.model.recipe = "q4", {"method": "nbits", "params": {"bits": 4, "accuracy_level": None}}
    text = render_markdown(run, "en")
    assert "q4: 4-bit MatMul built with accuracy_level — (not 4)" in text
    cell.model.recipe["params"]["accuracy_level"] = 4
    assert "accuracy_level" not in render_markdown(run, "en")


@pytest.mark.slow
def test_profiled_cells_table_and_plot(tmp_path: Path) -> None:
    run = _run(None, PROFILE)
    out = write_report(run, tmp_path, langs=("en", "th"))
    en = (tmp_path / "report.md").read_text(encoding="utf-8")
    section = en.split("## Where the time goes", 1)[1]
    assert "| fp32 · cpu · batch 1 | 350.000 | 100.0 | 25% | MatMul 71%, Softmax 14%, Add 9%, other 6% |" in section
    assert "(400.0 GFLOP/s" in section and "![fp32: op-type shares per cell](plots/where-fp32.png)" in section
    assert (tmp_path / "plots" / "where-fp32.png").stat().st_size > 1000
    assert tmp_path / "plots" / "where-fp32.png" in out.files
    assert "เวลาหมดไปที่ไหน" in (tmp_path / "report.th.md").read_text(encoding="utf-8")


def test_gpu_cells_say_what_was_not_measured() -> None:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    run = RunResult.from_dict(data)
    cell = next(c for c in run.cells if (c.variant, c.provider, c.status) == ("fp32", "cuda", "ok"))
    cell.profile = {**PROFILE, "kernels": None, "tensorrt_layers_note": None}  # type: ignore[typeddict-item]
    text = render_markdown(run, "en")
    assert "fp32 · cuda · batch 1: CUDA kernel times — not in this profile (not measured here)." in text
    cell.profile["kernels"] = [{"name": "sm80_xmma_gemm", "op_name": "MatMul", "calls": 10, "ms": 0.5}]  # type: ignore[index]
    assert "slowest CUDA kernels — `sm80_xmma_gemm` 0.500 ms" in render_markdown(run, "en")
