"""GPU provider plumbing without a GPU: library probes (missing → where looked + the pip fix), the TensorRT
cache key, cold vs warm engine caches, CUDA graph options and the copy breakdown. Fakes only at the
boundary: ORT's session (its effective providers) and the folders the library probe searches."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.engine import CudaGraphUnsupported, Engine, SessionSpec, breakdown_stats, cell_failure
from bench.environment import cuda_libraries, find_library, provider_libraries
from bench.errors import InputError
from bench.providers import CUDA_LIBRARIES, ProviderOptions, provider_chain, trt_cache_for

from fakes import fake_pynvml
from models import make_classifier


def site_with(tmp_path: Path, *files: str) -> list[Path]:
    """A site-packages folder holding these library files (paths relative to it)."""
    site = tmp_path / "site-packages"
    for rel in files:
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"\x7fELF")
    return [site]


# --- library probes -------------------------------------------------------------------------------


def test_missing_libraries_name_where_looked_and_the_pip_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path / "ld"))
    monkeypatch.setattr("bench.environment._SYSTEM_DIRS", (str(tmp_path / "usr-lib"),))
    site = site_with(tmp_path, "nvidia/cu13/lib/libcudart.so.13", "nvidia/cudnn/lib/libcudnn.so.9")
    state = provider_libraries("cuda", site_dirs=site, cache={"libcuda.so.1": "/usr/lib/libcuda.so.1"})
    rows = {r["name"]: r for r in state["libraries"]}
    assert rows["libcudart.so.13"]["found"] == str(site[0] / "nvidia/cu13/lib/libcudart.so.13")
    assert rows["libcuda.so.1"]["found"] == "/usr/lib/libcuda.so.1"  # the loader cache
    cublas = rows["libcublasLt.so.13"]
    assert cublas["found"] is None
    assert cublas["looked"] == [
        str(site[0] / "nvidia/cu13/lib"),
        str(tmp_path / "ld"),
        "ldconfig cache",
        str(tmp_path / "usr-lib"),
    ]
    assert cublas["fix"] == f"{sys.executable} -m pip install 'nvidia-cublas~=13.0'"
    assert state["missing"] == ["libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10"]  # optional ones left out
    assert state["fix"] == f"{sys.executable} -m pip install 'nvidia-cublas~=13.0' 'nvidia-curand~=10.0'"
    assert state["extra"] == "bench[cuda]" and state["driver_missing"] is False


def test_missing_driver_is_not_a_pip_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    monkeypatch.setattr("bench.environment._SYSTEM_DIRS", ())
    state = provider_libraries("tensorrt", site_dirs=[tmp_path], cache={})
    driver = next(r for r in state["libraries"] if r["name"] == "libcuda.so.1")
    assert driver["fix"] == "install the NVIDIA driver (not a pip package)" and state["driver_missing"] is True
    assert "'tensorrt-cu13-libs>=10.13,<11'" in state["fix"] and state["extra"] == "bench[tensorrt]"
    assert provider_libraries("cpu", site_dirs=[tmp_path], cache={})["libraries"] == []


def test_ld_library_path_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ld = tmp_path / "cuda" / "lib64"
    ld.mkdir(parents=True)
    (ld / "libcudnn.so.9").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(ld))
    monkeypatch.setattr("bench.environment._SYSTEM_DIRS", ())
    cudnn = next(lib for lib in CUDA_LIBRARIES if lib.soname == "libcudnn.so.9")
    assert find_library(cudnn, site_dirs=[], cache={})[0] == str(ld / "libcudnn.so.9")
    summary = cuda_libraries(site_dirs=[], cache={"libnvinfer.so.10": "/opt/trt/libnvinfer.so.10"})
    assert summary == {
        "cudart": None,
        "cublas": None,
        "cudnn": str(ld / "libcudnn.so.9"),
        "tensorrt": "/opt/trt/libnvinfer.so.10",
    }


def test_bench_info_json_lists_libraries_per_provider() -> None:
    res = CliRunner().invoke(main, ["info", "--json"])
    assert res.exit_code == 0, res.output
    env = json.loads(res.stdout)
    cuda = env["providers"]["cuda"]
    assert {r["name"] for r in cuda["libraries"]} >= {"libcudart.so.13", "libcublasLt.so.13", "libcudnn.so.9"}
    for row in cuda["libraries"]:
        assert row["found"] or (row["looked"] and row["fix"])
    assert env["providers"]["cpu"]["libraries"] == [] and "tensorrt" in env


# --- TensorRT cache -------------------------------------------------------------------------------


BASE = {"model_sha256": "a" * 64, "trt_version": "10.16.1.11", "gpu_name": "NVIDIA H200", "ort_version": "1.31.1"}


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"trt_version": "10.13.3.9"},
        {"gpu_name": "NVIDIA L4"},
        {"ort_version": "1.32.0"},
        {"options": ProviderOptions(trt_fp16=False)},
        {"options": ProviderOptions(trt_int8=True)},
        {"options": ProviderOptions(cuda_graph=True)},
    ],
    ids=lambda c: next(iter(c)) if "options" not in c else repr(c["options"]).split("(")[1][:40],
)
def test_trt_cache_key_changes_with_each_input(tmp_path: Path, change: dict[str, Any]) -> None:
    args = {**BASE, "options": ProviderOptions()}
    base = trt_cache_for(tmp_path, **args)
    other = trt_cache_for(tmp_path, **{**args, **change})
    assert base.key != other.key and base.engine_dir != other.engine_dir
    assert trt_cache_for(tmp_path, **args).key == base.key  # same inputs, same engine
    same_timing = "trt_version" not in change and "gpu_name" not in change
    assert (base.timing_dir == other.timing_dir) is same_timing  # timings are per TensorRT + GPU, not per model


def test_trt_provider_options_use_the_keyed_cache(tmp_path: Path) -> None:
    options = ProviderOptions(trt_cache_dir=tmp_path, trt_fp16=True, trt_int8=True, cuda_graph=True)
    cache = trt_cache_for(tmp_path, **{**BASE, "options": options})
    name, trt = provider_chain("tensorrt", options, cache)[0]
    assert name == "TensorrtExecutionProvider"
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(cache.engine_dir)
    assert trt["trt_timing_cache_enable"] is True and trt["trt_timing_cache_path"] == str(cache.timing_dir)
    assert trt["trt_fp16_enable"] is True and trt["trt_int8_enable"] is True and trt["trt_cuda_graph_enable"] is True
    assert cache.engine_dir.is_dir() and cache.state() == "cold"
    (cache.engine_dir / "TensorrtExecutionProvider_TRTKernel_graph_1.engine").write_bytes(b"plan")
    assert cache.state() == "warm"


def test_cuda_graph_option_reaches_the_cuda_provider_only_when_asked() -> None:
    assert provider_chain("cuda", ProviderOptions(cuda_graph=True))[0] == (
        "CUDAExecutionProvider",
        {"device_id": 0, "enable_cuda_graph": True},
    )
    assert "enable_cuda_graph" not in provider_chain("cuda", ProviderOptions())[0][1]


# --- Engine on a faked GPU provider ---------------------------------------------------------------


@pytest.fixture
def fake_gpu_ort(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """ORT reports the requested GPU provider as effective; a TensorRT session 'builds' an engine file."""
    import onnxruntime as ort

    real = ort.InferenceSession
    made: list[dict[str, Any]] = []

    class FakeGpuSession(real):  # type: ignore[misc, valid-type]
        def __init__(self, path: str, sess_options: Any = None, providers: Any = None, **kw: Any) -> None:
            options = kw.get("provider_options") or [{}]
            made.append({"providers": providers, "options": options[0]})
            cache = options[0].get("trt_engine_cache_path")
            if cache and not list(Path(cache).glob("*.engine")):
                (Path(cache) / "TensorrtExecutionProvider_TRTKernel_graph_0.engine").write_bytes(b"plan")
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
            self.first = providers[0]

        def get_providers(self) -> list[str]:
            return [self.first, "CPUExecutionProvider"]

    monkeypatch.setattr(ort, "InferenceSession", FakeGpuSession)
    monkeypatch.setattr("bench.engine.compiled_in", lambda p: (True, None))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    return made


def test_tensorrt_cold_then_warm_cache(tmp_path: Path, fake_gpu_ort: list[dict[str, Any]], capfd: Any) -> None:
    model = make_classifier(tmp_path / "model.onnx")
    spec = SessionSpec(provider_options=ProviderOptions(trt_cache_dir=tmp_path / "cache", trt_fp16=True))
    cold = Engine(model, "tensorrt", spec)
    build = cold.gpu_run()["engine_build"]
    assert build["cache"] == "cold" and build["build_ms"] > 0 and build["load_ms"] is None
    assert build["fp16"] is True and build["int8"] is False
    assert build["key_inputs"]["gpu"] == "NVIDIA Fake GPU 6GB" and len(build["key_inputs"]["model_sha256"]) == 64
    assert build["engine_files"] == ["TensorrtExecutionProvider_TRTKernel_graph_0.engine"]
    assert "building a TensorRT engine" in capfd.readouterr().err  # said before a build that may take minutes
    warm = Engine(model, "tensorrt", spec, model_sha256=build["key_inputs"]["model_sha256"]).gpu_run()["engine_build"]
    assert warm["cache"] == "warm" and warm["load_ms"] > 0 and warm["build_ms"] is None
    assert warm["cache_key"] == build["cache_key"]
    assert "building" not in capfd.readouterr().err
    other = Engine(model, "tensorrt", replace(spec, provider_options=replace(spec.provider_options, trt_fp16=False)))
    assert other.gpu_run()["engine_build"]["cache"] == "cold"  # another precision: another engine
    assert fake_gpu_ort[-1]["options"]["trt_fp16_enable"] is False


def test_cuda_graph_needs_iobinding_and_fixed_output_shapes(tmp_path: Path, fake_gpu_ort: list[Any]) -> None:
    spec = SessionSpec(provider_options=ProviderOptions(cuda_graph=True))
    engine = Engine(make_classifier(tmp_path / "model.onnx"), "cuda", spec)
    assert fake_gpu_ort[-1]["options"]["enable_cuda_graph"] is True
    assert engine.uses_cuda_graph and engine.gpu_run() == {"cuda_graph": True, "engine_build": None}
    with pytest.raises(InputError, match="--cuda-graph needs IOBinding"):
        engine.timed_call(engine.random_batch(2), io_binding=False)
    assert engine._output_buffers(8)[0][1] == [8, 2]  # batch axis fixed to the batch, classes from the model
    engine.session.get_outputs = lambda: [type("O", (), {"name": "logits", "shape": ["batch", "classes"]})()]
    with pytest.raises(CudaGraphUnsupported, match="dynamic shape") as err:
        engine._output_buffers(8)
    assert cell_failure(err.value, "cuda")[0] == "unavailable"  # the model does not allow it: a reason, not a crash


def test_cpu_cells_have_no_gpu_run_and_no_copy_breakdown(tmp_path: Path) -> None:
    engine = Engine(
        make_classifier(tmp_path / "model.onnx"), "cpu", SessionSpec(provider_options=ProviderOptions(cuda_graph=True))
    )
    assert engine.gpu_run() is None and not engine.uses_cuda_graph
    assert engine.copy_breakdown(engine.random_batch(1)) is None
    engine.timed_call(engine.random_batch(1), io_binding=False)()  # --cuda-graph is ignored on cpu cells


def test_breakdown_stats_split_copies_from_compute() -> None:
    stages = {"copy_in": [0.2, 0.3, 0.25], "compute": [2.0, 2.2, 2.1], "copy_out": [0.05, 0.05, 0.07]}
    out = breakdown_stats(stages, input_bytes=3 * 224 * 224 * 4)
    assert out["copy_in"] == {"n": 3, "p50": 0.25, "mean": pytest.approx(0.25)}
    assert out["compute"]["p50"] == 2.1 and out["copy_out"]["p50"] == 0.05
    assert out["total_p50"] == pytest.approx(2.4)
    assert out["copy_share"] == pytest.approx(0.3 / 2.4, abs=1e-4)
    assert out["input_bytes"] == 602112
    assert np.isfinite(out["copy_share"])


def test_cli_refuses_cuda_graph_without_iobinding_before_measuring() -> None:
    res = CliRunner().invoke(main, ["run", "--provider", "cuda", "--cuda-graph", "--no-io-binding"])
    assert res.exit_code == 2 and "--cuda-graph needs IOBinding" in res.output
