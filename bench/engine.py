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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import InputError
from bench.faults import slow_down
from bench.providers import EP_NAMES, ProviderOptions, compiled_in, is_gpu, provider_chain

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")

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


@dataclass(frozen=True)
class SessionSpec:
    """Session controls recorded in every result's config."""

    threads: int | None = None  # intra-op; None = ORT's default (all physical cores)
    inter_op_threads: int | None = None
    graph_opt: str = "all"
    provider_options: ProviderOptions = field(default_factory=ProviderOptions)


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


def cell_failure(exc: Exception, provider: str) -> tuple[str, str]:
    """(status, reason) of a cell whose session or inference raised ``exc``: the one mapping of provider trouble.

    A provider or model this ORT cannot run is ``unavailable``; anything raised while running is ``failed``.
    Input errors (bad flags, a broken model file) are not provider trouble: callers let them propagate.
    """
    if isinstance(exc, (ProviderUnavailable, ModelLoadError)):
        return "unavailable", str(exc)
    return "failed", f"{provider}: inference failed — {first_line(exc)}"


def _preload_cuda_dlls() -> None:
    """ORT finds CUDA/cuDNN from pip (onnxruntime-gpu[cuda,cudnn]) only after preload_dlls()."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            preload()


class Engine:
    """An ONNX Runtime session for one variant on one provider."""

    def __init__(self, model_path: str | Path, provider: str = "cpu", spec: SessionSpec | None = None):
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.provider = provider
        self.spec = spec or SessionSpec()
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
        chain = provider_chain(provider, self.spec.provider_options)

        start = time.perf_counter_ns()
        with capture_native_output() as log:
            if is_gpu(provider):
                _preload_cuda_dlls()
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
        feed = {self.input.name: batch.astype(self.input.dtype, copy=False)}
        if not use_binding:
            names = self.output_names[:1]
            return slow_down(lambda: self.session.run(names, feed), str(self.model_path))
        import onnxruntime as ort

        device = "cuda" if is_gpu(self.provider) else "cpu"
        device_id = self.spec.provider_options.device_id if device == "cuda" else 0
        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(feed[self.input.name], device, device_id)
        binding.bind_ortvalue_input(self.input.name, value)
        for name in self.output_names:
            binding.bind_output(name, device, device_id)

        def call() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        call.keepalive = value  # type: ignore[attr-defined]  # the OrtValue must outlive the binding
        return slow_down(call, str(self.model_path))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probe_provider(provider: str) -> dict[str, Any]:
    """Can ``provider`` really run here? Builds a session for a tiny model and reads back what ran."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    state: dict[str, Any] = {"execution_provider": EP_NAMES[provider], "usable": False, "reason": None}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save_model(model, path)
        try:
            Engine(path, provider)
            state["usable"] = True
        except (ProviderUnavailable, ModelLoadError) as exc:
            state["reason"] = str(exc)
    return state
