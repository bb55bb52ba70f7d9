from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.engine import Engine, ProviderUnavailable, SessionSpec, explain_fallback, first_line, softmax
from bench.errors import InputError
from bench.providers import ProviderOptions, parse_providers, provider_chain

from models import make_classifier


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_classifier(tmp_path / "model.onnx")


def test_cpu_session_reads_input_from_the_model(model: Path) -> None:
    engine = Engine(model, "cpu", SessionSpec(threads=1, graph_opt="basic"))
    assert engine.providers_effective == ["CPUExecutionProvider"]
    assert engine.input.name == "pixel_values"
    assert engine.input.shape[1:] == (3, 32, 32)
    assert engine.input.fixed_batch is None
    assert engine.session_create_ms > 0
    probs = engine.predict_proba(engine.random_batch(4, seed=1))
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)


def test_random_batch_is_seeded(model: Path) -> None:
    engine = Engine(model)
    np.testing.assert_array_equal(engine.random_batch(2, seed=3), engine.random_batch(2, seed=3))
    assert not np.array_equal(engine.random_batch(2, seed=3), engine.random_batch(2, seed=4))


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_without_gpu_is_unavailable_with_a_reason(
    model: Path, provider: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ProviderUnavailable) as err:
        Engine(model, provider)
    reason = str(err.value)
    assert reason.startswith(f"{provider}: unavailable — ")
    assert "\n" not in reason
    out, errout = capfd.readouterr()
    assert out == "" and "Failed to load" not in errout  # ORT's own lines are kept off the screen


def test_fallback_reason_from_ort_log_lines() -> None:
    log = [
        "2026 [E:onnxruntime:Default, provider_bridge_ort.cc:2250 TryGetProviderInfo_CUDA] Failed to load "
        "library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file"
    ]
    assert "libcublasLt.so.13 not found" in explain_fallback("cuda", log)
    assert "TensorRT libraries" in explain_fallback("tensorrt", ["Please install TensorRT libraries as mentioned"])
    assert "no log line said why" in explain_fallback("cuda", [])


def test_fixed_batch_dimension_is_refused_with_advice(tmp_path: Path) -> None:
    engine = Engine(make_classifier(tmp_path / "m.onnx", batch=1))
    assert engine.input.fixed_batch == 1
    with pytest.raises(InputError, match="batch dimension fixed to 1; use --batch-size 1"):
        engine.check_batch_size(8)
    engine.check_batch_size(1)


@pytest.mark.parametrize("content", [b"", b"hello, not onnx", None])
def test_not_onnx_or_truncated_file_is_an_input_error(model: Path, tmp_path: Path, content: bytes | None) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.read_bytes()[:200] if content is None else content)
    with pytest.raises(InputError, match="not a valid ONNX model"):
        Engine(bad)


def test_unexpected_input_rank_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, tmp_path / "flat.onnx")
    with pytest.raises(InputError, match=r"rank 2 .* expected an image batch \[N, C, H, W\]"):
        Engine(tmp_path / "flat.onnx")


def test_timed_call_without_binding_runs(model: Path) -> None:
    engine = Engine(model)
    call = engine.timed_call(engine.random_batch(2), io_binding=False)
    assert call()[0].shape == (2, 2)
    assert engine.io_binding_default is False


def test_cpu_iobinding_path_runs(model: Path) -> None:
    engine = Engine(model)
    engine.timed_call(engine.random_batch(1), io_binding=True)()


def test_provider_chains() -> None:
    opts = ProviderOptions(device_id=1, trt_fp16=False)
    assert [n for n, _ in provider_chain("cpu", opts)] == ["CPUExecutionProvider"]
    assert provider_chain("cuda", opts)[0] == ("CUDAExecutionProvider", {"device_id": 1})
    trt = provider_chain("tensorrt", opts)
    assert [n for n, _ in trt] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert trt[0][1]["trt_fp16_enable"] is False


def test_parse_providers_rejects_unknown() -> None:
    assert parse_providers("CPU, cuda,cpu") == ["cpu", "cuda"]
    with pytest.raises(InputError, match="unknown provider 'rocm'; choose from cpu, cuda, tensorrt"):
        parse_providers("rocm")


def test_gpu_session_accepted_when_ort_reports_it_first(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake at the ORT boundary: a session whose effective providers start with CUDA is a CUDA cell."""
    import onnxruntime as ort

    real = ort.InferenceSession

    class FakeCudaSession(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: object = None, providers: object = None, **kw: object) -> None:
            self.requested = providers
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self) -> list[str]:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", FakeCudaSession)
    monkeypatch.setattr("bench.engine.compiled_in", lambda p: (True, None))
    engine = Engine(model, "cuda", SessionSpec(provider_options=ProviderOptions(device_id=0)))
    assert engine.providers_effective[0] == "CUDAExecutionProvider"
    assert engine.session.requested == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert engine.io_binding_default is True


def test_first_line_strips_ort_prefix() -> None:
    assert (
        first_line(RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find kernel\nmore"))
        == "Could not find kernel"
    )


def test_softmax_is_stable() -> None:
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def test_probe_model_is_the_identity_model_onnx_helper_builds() -> None:
    """bench.engine ships the probe model serialised (importing onnx costs `bench info` 0.7 s); it is this one."""
    from onnx import TensorProto, helper

    from bench.engine import PROBE_MODEL, probe_provider

    shape = [1, 3, 2, 2]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert model.SerializeToString() == PROBE_MODEL
    assert probe_provider("cpu") == {"execution_provider": "CPUExecutionProvider", "usable": True, "reason": None}
