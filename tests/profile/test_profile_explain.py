"""Op-type deltas between two profiles, the share of the end-to-end delta they explain, and the explanation
attached to a regression row (bench ab / bench compare)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from convnet import make_convnet

from bench.compare import CompareRow
from bench.modelfile import model_info
from bench.profile.explain import explain_regressions, op_type_deltas, profile_against
from bench.results import CellResult, RunResult


def _ops(**ms: float) -> dict[str, Any]:
    return {"op_types": [{"op_type": k, "ms": v} for k, v in ms.items()]}


def test_deltas_per_op_type_largest_first() -> None:
    rows = op_type_deltas(_ops(Conv=1.0, Relu=0.2, Add=0.1), _ops(Conv=1.5, Relu=0.1, Softmax=0.3))
    assert [r["op_type"] for r in rows] == ["Conv", "Softmax", "Relu", "Add"]
    assert rows[0] == {"op_type": "Conv", "a_ms": 1.0, "b_ms": 1.5, "delta_ms": 0.5}
    assert rows[1]["a_ms"] == 0.0 and rows[3]["b_ms"] == 0.0  # an op type on one side only


def _side(root: Path, channels: tuple[int, ...], p50: float) -> RunResult:
    path = make_convnet(root / "onnx" / "model.onnx", channels=channels)
    cell = CellResult("fp32", "cpu", 1, model=model_info(path), latency_ms={"p50": p50})
    return RunResult(environment={}, config={"command": "run", "model_dir": str(root), "threads": 1}, cells=[cell])


def _row(verdict: str = "regression", metric: str = "latency_p50_ms") -> CompareRow:
    key = {"variant": "fp32", "provider": "cpu", "batch_size": 1}
    return CompareRow(key, metric, 1.0, 1.3, ratio=1.3, verdict=verdict, why="p50 ×1.30")  # type: ignore[arg-type]


def test_a_regression_row_gets_its_top_op_type_deltas(tmp_path: Path) -> None:
    base, cur = _side(tmp_path / "a", (32, 64, 64, 64), 1.0), _side(tmp_path / "b", (48, 80, 64, 64), 1.3)
    rows = [_row(), _row("same"), _row(metric="rss_peak_mb")]
    assert explain_regressions(rows, base, cur, runs=5) == 1
    explanation = rows[0].explanation or {}
    assert explanation["op_types"][0]["op_type"] == "Conv" and explanation["op_types"][0]["delta_ms"] > 0
    assert explanation["e2e_delta_ms"] == pytest.approx(0.3) and explanation["explained"] is not None
    assert rows[0].why.startswith("p50 ×1.30; where: Conv +")
    assert rows[1].explanation is None and rows[2].explanation is None  # only latency regressions


def test_unreachable_model_files_are_said_not_guessed(tmp_path: Path) -> None:
    base, cur = _side(tmp_path / "a", (32, 64, 64, 64), 1.0), _side(tmp_path / "b", (48, 80, 64, 64), 1.3)
    make_convnet(tmp_path / "b" / "onnx" / "model.onnx", channels=(16, 16, 16, 16))  # changed since measured
    row = _row()
    assert explain_regressions([row], base, cur) == 0
    assert row.explanation == {"op_types": None, "why": row.explanation["why"]}  # type: ignore[index]
    assert "sha256 differs" in row.explanation["why"] and row.why == "p50 ×1.30"  # type: ignore[index]


def test_explained_is_the_op_deltas_share_of_a_decided_end_to_end_delta(tmp_path: Path) -> None:
    from bench.profile.explain import explain
    from bench.profile.profiler import profile_model

    a = profile_model(make_convnet(tmp_path / "a.onnx"), runs=5)
    b = profile_model(make_convnet(tmp_path / "b.onnx", channels=(48, 80, 64, 64)), runs=5)
    op_delta = sum(r["delta_ms"] for r in op_type_deltas(a.as_dict(), b.as_dict()))
    decided = explain(a, b, {"e2e_delta_ms": op_delta * 2, "ratio_ci": [1.1, 1.3]})
    assert decided["explained"] == pytest.approx(0.5, abs=0.01) and decided["explained_why"] is None
    assert decided["op_types"][0]["op_type"] == "Conv" and decided["a"]["total_flops"] < decided["b"]["total_flops"]
    noise = explain(a, b, {"e2e_delta_ms": 0.01, "ratio_ci": [0.97, 1.04]})
    assert noise["explained"] is None and "within the noise" in noise["explained_why"]


def test_a_failed_profile_keeps_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.profile.explain as explain_module

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : out of memory")

    monkeypatch.setattr(explain_module, "profile_model", broken)
    base, cur = _side(tmp_path / "a", (32, 64, 64, 64), 1.0), _side(tmp_path / "b", (48, 80, 64, 64), 1.3)
    row = _row()
    assert explain_regressions([row], base, cur) == 0
    assert row.explanation == {"op_types": None, "why": "not profiled: out of memory"} and row.verdict == "regression"


@pytest.mark.slow
def test_the_twin_slowdown_is_explained_by_conv(tmp_path: Path) -> None:
    """The +28 % twin, timed for real: Conv's delta comes first and is positive, and the share explained is a
    figure or says why not. The 85–115 % target is measured by tests/benchmarks/profile_targets.py on a quiet
    machine: on a shared one the end-to-end delta is inflated by descheduling, and a test would only flake."""
    from bench.options import SessionSpec

    a = make_convnet(tmp_path / "a.onnx")
    b = make_convnet(tmp_path / "b.onnx", channels=(48, 80, 64, 64))
    _, _, explanation = profile_against(a, b, spec=SessionSpec(threads=1), runs=20)
    conv = explanation["op_types"][0]
    assert conv["op_type"] == "Conv" and conv["delta_ms"] > 0 and explanation["e2e_delta_ms"] > 0, explanation
    assert explanation["explained"] is not None or explanation["explained_why"], explanation
