"""The one place that creates ONNX Runtime sessions and runs a batch.

An :class:`Engine` is one variant on one provider. It refuses to pretend: when ORT silently falls back
to the CPU (a missing CUDA library, no GPU, no TensorRT), it raises :class:`ProviderUnavailable` with
ORT's own log line turned into the reason, instead of returning CPU numbers under a GPU label.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.environment import preload_tensorrt, tensorrt_version
from bench.errors import InputError
from bench.faults import slow_down
from bench.gpu import probe as probe_gpu
from bench.modelfile import file_sha256
from bench.options import SessionSpec
from bench.providers import EP_NAMES, ProviderOptions, TrtCache, compiled_in, is_gpu, provider_chain, trt_cache_for
from bench.results import CopyBreakdown, GpuRun, StageTime
from bench.timing import LatencyStats

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


_INVALID_MODEL_MARKERS = (
    "INVALID_PROTOBUF",
    "Protobuf parsing failed",
    "ModelProto does not have a graph",
    "No graph was found",
)


class ProviderUnavailable(RuntimeError):
    """The requested provider did not run this model here; the message is the one-line reason."""


class ModelLoadError(RuntimeError):
    """The model loads as ONNX but this ORT cannot build a session for it on this provider."""


class CudaGraphUnsupported(ModelLoadError):
    """This model cannot be captured as a CUDA graph (dynamic output shape, nodes off the GPU, ...)."""


@dataclass(frozen=True)
class InputSpec:
    """The model's (single) image input as declared in the graph."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: type

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the model insists on, or None when the batch axis is dynamic."""
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None

    def image_hw(self) -> tuple[int, int] | None:
        h, w = self.shape[2], self.shape[3]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None


@contextlib.contextmanager
def capture_native_output() -> Iterator[list[str]]:
    """Collect what ORT writes to fds 1 and 2 (its C++ logger and its Python prints), off the user's screen.

    stdout matters too: ``preload_dlls`` prints there, and ``--json`` must keep stdout clean.
    """
    lines: list[str] = []
    py_sink = io.StringIO()  # Python-level prints, wherever sys.stdout points (e.g. under pytest)
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        contextlib.redirect_stdout(py_sink),
        contextlib.redirect_stderr(py_sink),
    ):
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no fds (embedded interpreters): only Python-level output is captured
            yield lines
            lines.extend(py_sink.getvalue().splitlines())
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
            lines.extend(py_sink.getvalue().splitlines())


_FALLBACK_REASONS = (
    (r"Please install TensorRT libraries", "TensorRT libraries (libnvinfer) not found"),
    (r"(lib[\w.+-]+\.so[.\d]*): cannot open shared object file", "{0} not found"),
    (r"CUDA failure 100: no CUDA-capable device|cudaErrorNoDevice|no CUDA-capable device", "no CUDA-capable GPU"),
    (r"Failed to load library (\S+)", "{0} could not be loaded"),
)


def explain_fallback(provider: str, log_lines: list[str]) -> str:
    """One line saying why ``provider`` did not run, from ORT's captured log."""
    patterns = _FALLBACK_REASONS if provider == "tensorrt" else _FALLBACK_REASONS[1:]
    for pattern, template in patterns:
        for line in log_lines:
            m = re.search(pattern, line)
            if m:
                why = template.format(*m.groups())
                return f"{provider}: unavailable — {why} ({EP_NAMES[provider]} could not start; ORT fell back to CPU)"
    errors = [ln for ln in log_lines if "[E:" in ln or "Error" in ln]
    detail = _trim(errors[0]) if errors else "no log line said why"
    return f"{provider}: unavailable — ONNX Runtime did not enable {EP_NAMES[provider]} ({detail})"


def _trim(text: str, limit: int = 240) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(exc: BaseException) -> str:
    """The first meaningful line of an ORT exception, without its ``[ONNXRuntimeError] : 1 : FAIL :`` prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _trim(re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text))


def cell_failure(exc: Exception, provider: str) -> tuple[Literal["unavailable", "failed"], str]:
    """(status, reason) of a cell whose session or inference raised ``exc``: the one mapping of provider trouble.

    A provider or model this ORT cannot run is ``unavailable``; anything raised while running is ``failed``.
    Input errors (bad flags, a broken model file) are not provider trouble: callers let them propagate.
    """
    if isinstance(exc, (ProviderUnavailable, ModelLoadError)):
        return "unavailable", str(exc)
    return "failed", f"{provider}: inference failed — {first_line(exc)}"


def _preload_cuda_dlls(provider: str) -> None:
    """ORT finds CUDA/cuDNN from pip (``bench[cuda]``) only after preload_dlls(), and TensorRT from pip
    (``bench[tensorrt]``) only once its libraries are loaded: both before the session is made."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            preload()
    if provider == "tensorrt":
        preload_tensorrt()


class Engine:
    """An ONNX Runtime session for one variant on one provider."""

    def __init__(
        self,
        model_path: str | Path,
        provider: str = "cpu",
        spec: SessionSpec | None = None,
        model_sha256: str | None = None,
        configure: Callable[[Any], None] | None = None,
    ):
        """``model_sha256``: the file's hash when the caller has it (it keys the TensorRT cache; else hashed here).
        ``configure``: called with the SessionOptions before the session is made (bench.profile turns on ORT's
        profiler there, in a session of its own, never a timed one)."""
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.provider = provider
        self.spec = spec or SessionSpec()
        self.trt_cache: TrtCache | None = None
        self.cache_state: Literal["cold", "warm", "off"] = "off"
        if not self.model_path.is_file():
            raise InputError(f"model file {self.model_path} not found")
        if provider not in EP_NAMES:
            raise InputError(f"unknown provider {provider!r}; choose from {', '.join(EP_NAMES)}")
        ok, why = compiled_in(provider)
        if not ok:
            raise ProviderUnavailable(f"{provider}: unavailable — {why}")

        opts = ort.SessionOptions()
        if self.spec.threads:
            opts.intra_op_num_threads = self.spec.threads
        if self.spec.inter_op_threads:
            opts.inter_op_num_threads = self.spec.inter_op_threads
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.spec.graph_opt]
        po = self.spec.provider_options
        if provider == "tensorrt" and po.trt_cache_dir is not None:
            self.trt_cache = self._trt_cache(po, model_sha256, ort.__version__)
            self.cache_state = self.trt_cache.state()
            if self.cache_state == "cold":  # before ORT's output is captured: a build can take minutes
                print(
                    f"bench: building a TensorRT engine for {self.model_path.name} (cold cache "
                    f"{self.trt_cache.engine_dir}); later runs with the same key load it",
                    file=sys.stderr,
                    flush=True,
                )
        chain = provider_chain(provider, po, self.trt_cache)
        if configure is not None:
            configure(opts)

        start = time.perf_counter_ns()
        with capture_native_output() as log:
            if is_gpu(provider):
                _preload_cuda_dlls(provider)
            try:
                self.session = ort.InferenceSession(
                    str(self.model_path),
                    sess_options=opts,
                    providers=[name for name, _ in chain],
                    provider_options=[o for _, o in chain],
                )
            except Exception as exc:
                self._raise_load_error(exc)
        self.session_create_ms = (time.perf_counter_ns() - start) / 1e6
        self.ort_log = log
        self.providers_effective: list[str] = list(self.session.get_providers())
        if not self.providers_effective or self.providers_effective[0] != EP_NAMES[provider]:
            raise ProviderUnavailable(explain_fallback(provider, log))

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise InputError(
                f"{self.model_path.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "bench measures image classifiers with one pixel input"
            )
        meta = inputs[0]
        self.input = InputSpec(name=meta.name, shape=tuple(meta.shape), dtype=_ORT_DTYPES.get(meta.type, np.float32))
        if len(self.input.shape) != 4:
            raise InputError(
                f"{self.model_path.name}: input {meta.name!r} has rank {len(self.input.shape)} {list(meta.shape)}; "
                "expected an image batch [N, C, H, W]"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.num_classes = self._num_classes()

    def _trt_cache(self, po: ProviderOptions, model_sha256: str | None, ort_version: str) -> TrtCache:
        assert po.trt_cache_dir is not None
        gpu, _ = probe_gpu(po.device_id)
        gpu_name = gpu.describe()["name"] if gpu is not None else "unknown-gpu"
        return trt_cache_for(
            Path(po.trt_cache_dir),
            model_sha256 or file_sha256(self.model_path),
            tensorrt_version() or "unknown",
            gpu_name,
            po,
            ort_version,
        )

    def gpu_run(self) -> GpuRun | None:
        """What a GPU cell ran with: CUDA graph, TensorRT precision flags, and the engine build (cold or warm
        cache, build time apart from inference). None for a CPU cell."""
        if not is_gpu(self.provider):
            return None
        po = self.spec.provider_options
        out: GpuRun = {"cuda_graph": po.cuda_graph, "engine_build": None}
        if self.provider == "tensorrt":
            cold = self.cache_state in ("cold", "off")
            out["engine_build"] = {
                "tensorrt": tensorrt_version(),
                "fp16": po.trt_fp16,
                "int8": po.trt_int8,
                "cache": self.cache_state,
                "cache_key": self.trt_cache.key if self.trt_cache else None,
                "cache_dir": str(self.trt_cache.engine_dir) if self.trt_cache else None,
                "key_inputs": self.trt_cache.key_inputs if self.trt_cache else None,
                "engine_files": [p.name for p in self.trt_cache.engine_files()] if self.trt_cache else [],
                # a cold session builds the engine (a warm one deserialises it): its creation time is the build
                "build_ms": round(self.session_create_ms, 3) if cold else None,
                "load_ms": None if cold else round(self.session_create_ms, 3),
            }
        return out

    def _raise_load_error(self, exc: Exception) -> None:
        text = str(exc)
        if any(k in text for k in _INVALID_MODEL_MARKERS):
            raise InputError(
                f"{self.model_path} is not a valid ONNX model (truncated or not ONNX): {first_line(exc)}; "
                "re-download or rebuild it"
            ) from exc
        if "NO_SUCHFILE" in text or "No such file" in text:
            raise InputError(f"model file {self.model_path} not found") from exc
        raise ModelLoadError(f"{self.provider}: {first_line(exc)}") from exc

    def _num_classes(self) -> int | None:
        shape = self.session.get_outputs()[0].shape
        last = shape[-1] if shape else None
        return last if isinstance(last, int) else None

    @property
    def io_binding_default(self) -> bool:
        return is_gpu(self.provider)

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse a batch size the model's fixed batch axis cannot take."""
        if batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
        fixed = self.input.fixed_batch
        if fixed is not None and fixed != batch_size:
            raise InputError(
                f"{self.model_path.name} has its batch dimension fixed to {fixed}; use --batch-size {fixed} "
                "or re-export the model with a dynamic batch axis"
            )

    def random_batch(self, batch_size: int, seed: int = 0) -> np.ndarray:
        """A seeded random input of the model's real shape and dtype; dynamic H/W default to 224."""
        self.check_batch_size(batch_size)
        dims = [batch_size] + [d if isinstance(d, int) and d > 0 else 224 for d in self.input.shape[1:]]
        rng = np.random.default_rng(seed)
        return rng.standard_normal(dims, dtype=np.float32).astype(self.input.dtype)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch."""
        return self.session.run(self.output_names[:1], {self.input.name: batch.astype(self.input.dtype, copy=False)})[0]

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits, in float64)."""
        return softmax(self.run(batch))

    def timed_call(self, batch: np.ndarray, io_binding: bool | None = None) -> Callable[[], Any]:
        """A zero-argument callable running one inference, for the timed loop.

        With IOBinding (default on GPU) the input is resident on the device and the output stays there:
        the call measures the model, and host↔device copies are not mixed into the figure. Without it,
        each call is a plain ``session.run`` on host arrays, copies included.
        """
        use_binding = self.io_binding_default if io_binding is None else io_binding
        graph = self.uses_cuda_graph
        if graph and not use_binding:
            raise InputError("--cuda-graph needs IOBinding (fixed device addresses); drop --no-io-binding")
        feed: dict[str, np.ndarray] = {self.input.name: batch.astype(self.input.dtype, copy=False)}
        if not use_binding:
            names = self.output_names[:1]
            return slow_down(lambda: self.session.run(names, feed), str(self.model_path))
        import onnxruntime as ort

        device = "cuda" if is_gpu(self.provider) else "cpu"
        device_id = self.spec.provider_options.device_id if device == "cuda" else 0
        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(feed[self.input.name], device, device_id)
        binding.bind_ortvalue_input(self.input.name, value)
        outputs = []
        for name, shape, dtype in self._output_buffers(batch.shape[0]) if graph else []:
            # a CUDA graph replays fixed addresses: the outputs are allocated once, before capture
            out = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, device_id)
            binding.bind_ortvalue_output(name, out)
            outputs.append(out)
        if not graph:
            for name in self.output_names:
                binding.bind_output(name, device, device_id)

        def call(*, _keepalive: object = (value, outputs)) -> None:  # the OrtValues must outlive the binding
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return slow_down(call, str(self.model_path))

    @property
    def uses_cuda_graph(self) -> bool:
        return self.spec.provider_options.cuda_graph and is_gpu(self.provider)

    def _output_buffers(self, batch_size: int) -> list[tuple[str, list[int], type]]:
        """(name, shape, dtype) of every output at ``batch_size``; a CUDA graph needs them all fixed."""
        buffers: list[tuple[str, list[int], type]] = []
        for out in self.session.get_outputs():
            dims = list(out.shape)
            if dims and not isinstance(dims[0], int):
                dims[0] = batch_size
            if not all(isinstance(d, int) and d > 0 for d in dims):
                raise CudaGraphUnsupported(
                    f"{self.provider}: CUDA graph not possible for {self.model_path.name}: output {out.name!r} "
                    f"has a dynamic shape {list(out.shape)} (a graph replays fixed shapes); run without --cuda-graph"
                )
            buffers.append((out.name, dims, _ORT_DTYPES.get(out.type, np.float32)))
        return buffers

    def copy_breakdown(self, batch: np.ndarray, calls: int = 50, warmup: int = 3) -> CopyBreakdown | None:
        """Where an end-to-end GPU call (``--no-io-binding``) spends its time: host→device copy of the input,
        compute (outputs left on the device), device→host copy of the outputs; per-stage medians and means
        over ``calls`` staged calls. None for a CPU cell (no copies)."""
        if not is_gpu(self.provider) or self.uses_cuda_graph:
            return None
        import onnxruntime as ort

        device_id = self.spec.provider_options.device_id
        host: np.ndarray = batch.astype(self.input.dtype, copy=False)
        binding = self.session.io_binding()
        stages: dict[str, list[float]] = {"copy_in": [], "compute": [], "copy_out": []}
        for i in range(warmup + calls):
            t0 = time.perf_counter_ns()
            value = ort.OrtValue.ortvalue_from_numpy(host, "cuda", device_id)
            t1 = time.perf_counter_ns()
            binding.bind_ortvalue_input(self.input.name, value)
            for name in self.output_names:
                binding.bind_output(name, "cuda", device_id)
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            t2 = time.perf_counter_ns()
            binding.copy_outputs_to_cpu()
            t3 = time.perf_counter_ns()
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            if i >= warmup:
                for key, ns in (("copy_in", t1 - t0), ("compute", t2 - t1), ("copy_out", t3 - t2)):
                    stages[key].append(ns / 1e6)
        return breakdown_stats(stages, input_bytes=host.nbytes)


def breakdown_stats(stages: dict[str, list[float]], input_bytes: int | None = None) -> CopyBreakdown:
    """Per-stage p50/mean (ms) of staged calls (``copy_in``, ``compute``, ``copy_out``), and the copies' share of
    the summed medians."""

    def stage(samples: list[float]) -> StageTime:
        stats = LatencyStats.from_samples(samples)
        return {"n": stats.n, "p50": round(stats.p50, 5), "mean": round(stats.mean, 5)}

    copy_in, compute, copy_out = stage(stages["copy_in"]), stage(stages["compute"]), stage(stages["copy_out"])
    total = copy_in["p50"] + compute["p50"] + copy_out["p50"]
    return {
        "copy_in": copy_in,
        "compute": compute,
        "copy_out": copy_out,
        "total_p50": round(total, 5),
        "copy_share": round((copy_in["p50"] + copy_out["p50"]) / total, 4) if total > 0 else None,
        "input_bytes": input_bytes,
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# A one-node model (Identity on a float [1, 3, 2, 2] tensor, opset 17, IR 8), serialised: building it with onnx.helper
# costs `bench info` 0.7 s of importing onnx. tests/test_engine.py rebuilds it with onnx.helper and compares.
PROBE_MODEL = bytes.fromhex(
    "08083a530a100a017812017922084964656e74697479120570726f62655a1b0a017812160a14080112100a0208010a0208030a0208020a"
    "020802621b0a017912160a14080112100a0208010a0208030a0208020a02080242040a001011"
)


def probe_provider(provider: str) -> dict[str, Any]:
    """Can ``provider`` really run here? Builds a session for a tiny model and reads back what ran."""
    state: dict[str, Any] = {"execution_provider": EP_NAMES[provider], "usable": False, "reason": None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        path.write_bytes(PROBE_MODEL)
        try:
            Engine(path, provider)
            state["usable"] = True
        except (ProviderUnavailable, ModelLoadError) as exc:
            state["reason"] = str(exc)
    return state
