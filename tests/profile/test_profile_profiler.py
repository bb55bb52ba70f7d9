"""ORT's profile parsed per node and op type; a real profile of a conv net of known cost; the GPU path (CUDA
kernel events, TensorRT's one-node engine) with fake traces at the ORT boundary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from convnet import analytic_flops, make_convnet

from bench.profile.flops import GraphFlops, NodeFlops
from bench.profile.profiler import TENSORRT_LAYERS_NOTE, Profile, parse_trace, profile_model


def _run(ts: int, dur: int) -> dict[str, Any]:
    return {"cat": "Session", "name": "model_run", "ph": "X", "ts": ts, "dur": dur, "args": {}}


def _node(name: str, op: str, ts: int, dur: int, provider: str = "CPUExecutionProvider") -> dict[str, Any]:
    args = {"op_name": op, "provider": provider, "output_type_shape": [{"float": [1, 8]}]}
    return {"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": ts, "dur": dur, "args": args}


def fake_trace(runs: int = 3, gpu: bool = False) -> list[dict[str, Any]]:
    """``runs`` calls of a two-node graph (conv 300 µs, relu 100 µs); the first call (warm-up) 10× slower."""
    events: list[dict[str, Any]] = []
    for i in range(runs):
        t0, slow = 10_000 * i, 10 if i == 0 else 1
        events += [_run(t0, 500 * slow), _node("conv", "Conv", t0 + 1, 300 * slow), _node("relu", "Relu", t0 + 2, 100)]
        if gpu:
            kernel = {"op_name": "Conv", "stream": 7}
            events.append(
                {"cat": "Kernel", "name": "sm80_xmma_fprop", "ph": "X", "ts": t0 + 3, "dur": 250, "args": kernel}
            )
    return events


def test_parse_trace_drops_warmup_runs_and_sums_per_node() -> None:
    trace = parse_trace(fake_trace(), warmup=1)
    assert trace.runs == 2 and trace.run_ms == [0.5, 0.5]
    assert trace.nodes["conv"]["calls"] == 2 and trace.nodes["conv"]["total_us"] == 600
    assert trace.nodes["relu"]["op_type"] == "Relu" and trace.nodes["relu"]["outputs"] == [[1, 8]]


def _profile(provider: str, trace_events: list[dict[str, Any]]) -> Profile:
    flops = GraphFlops([NodeFlops("conv", "Conv", 3_000_000), NodeFlops("relu", "Relu", None)])
    return Profile("m.onnx", "fp32", provider, 1, None, parse_trace(trace_events, 1), flops, 3_000_000, [0.45] * 5)


def test_profile_json_has_the_issue_keys() -> None:
    data = _profile("cpu", fake_trace()).as_dict()
    conv, relu = data["op_types"]
    assert conv == {"op_type": "Conv", "calls": 2, "ms": 0.3, "share": 0.75, "flops": 3_000_000, "gflops": 10.0}
    assert relu["flops"] is None and relu["share"] == 0.25
    assert data["nodes"][0] == {
        "name": "conv",
        "op_type": "Conv",
        "provider": "CPUExecutionProvider",
        "calls": 2,
        "ms": 0.3,
        "flops": 3_000_000,
        "gflops": 10.0,
    }
    assert data["total_flops"] == 3_000_000 and data["achieved_gflops"] == round(3e6 / 0.45e6, 3)
    assert data["peak_gflops"] is None and data["fraction_of_peak"] is None  # no peak measured: unknown, not 0
    assert data["profiler_overhead_ms"] == pytest.approx(0.05)
    assert "kernels" not in data  # a CPU profile has no GPU keys


def test_gpu_profiles_list_cuda_kernels_and_say_tensorrt_layers_are_not_measured() -> None:
    cuda = _profile("cuda", fake_trace(gpu=True)).as_dict()
    assert cuda["kernels"] == [{"name": "sm80_xmma_fprop", "op_name": "Conv", "calls": 2, "ms": 0.25}]
    assert cuda["tensorrt_layers_note"] is None
    trt = _profile("tensorrt", fake_trace()).as_dict()
    assert trt["kernels"] is None and "not measured here" in trt["kernels_note"]
    assert trt["tensorrt_layers_note"] == TENSORRT_LAYERS_NOTE


def test_a_conv_net_of_known_cost(tmp_path: Path) -> None:
    """Target: total_flops within ±2 % of the analytic count, Conv ≥ 70 % of op time."""
    path = make_convnet(tmp_path / "c.onnx")
    profile = profile_model(path, "cpu", batch_size=2, runs=10, keep_trace=tmp_path / "trace.json")
    data = profile.as_dict()
    expected = analytic_flops(2, 64, (32, 64, 64, 64))
    assert abs(data["total_flops"] - expected) <= 0.02 * expected, (data["total_flops"], expected)
    assert data["static_flops"] == expected
    conv = next(r for r in data["op_types"] if r["op_type"] == "Conv")
    assert conv["share"] >= 0.70 and conv["calls"] == 40, data["op_types"]
    assert data["op_types"][0]["op_type"] == "Conv" and data["achieved_gflops"] > 0
    assert {n["op_type"] for n in data["nodes"]} >= {"Conv", "MatMul"} and data["runs"] == 10
    assert json.loads((tmp_path / "trace.json").read_text())  # ORT's own trace, kept
