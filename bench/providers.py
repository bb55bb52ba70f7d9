"""cpu / cuda / tensorrt → ONNX Runtime provider lists with their options.

A provider is added here and nowhere else. Whether it really ran is decided by the engine, which reads
``session.get_providers()`` back after creating the session.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.errors import InputError
from bench.settings import check, setting

EP_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_NAMES = tuple(EP_NAMES)


@dataclass(frozen=True)
class ProviderOptions:
    """Provider-specific options: the GPU, CUDA graphs, TensorRT's precision flags and its cache folder."""

    device_id: int = setting(
        0, flag="--device-id", help="GPU index for cuda/tensorrt.", role="watch", minimum=0, maximum=1023
    )
    trt_fp16: bool = setting(
        True, flag="--trt-fp16", negative="--no-trt-fp16", help="TensorRT fp16 kernels.", role="watch"
    )
    trt_int8: bool = setting(
        False,
        flag="--trt-int8",
        negative="--no-trt-int8",
        help="TensorRT int8 kernels (QDQ models).",
        role="watch",
    )
    cuda_graph: bool = setting(
        False,
        flag="--cuda-graph",
        is_flag=True,
        help="Capture the model as a CUDA graph and replay it (cuda/tensorrt; needs IOBinding and fixed shapes).",
        role="watch",
    )
    trt_cache_dir: Path | None = setting(
        None,
        flag="--trt-cache",
        config_key="trt_cache",
        path=True,
        help="TensorRT engine + timing cache folder, keyed by model sha256, TensorRT version, GPU and "
        "options; re-used across cells and runs (engine build time is reported apart).",
        role="measure",
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Library:
    """A shared library a provider loads, and the pip package that ships it (None: not pip-installable)."""

    soname: str
    what: str
    pip: str | None
    pip_dirs: tuple[str, ...] = ()  # where that package puts it, relative to site-packages
    required: bool = True


# What onnxruntime-gpu 1.31 (built for CUDA 13.0, TensorRT 10) loads: `readelf -d` on its provider
# libraries and onnxruntime.preload_dlls(). CUDA 13 wheels put their libraries in nvidia/cu13/lib.
_CU13 = ("nvidia/cu13/lib",)
CUDA_LIBRARIES = (
    Library("libcuda.so.1", "NVIDIA driver", None),
    Library("libcudart.so.13", "CUDA runtime", "nvidia-cuda-runtime~=13.0", _CU13),
    Library("libcublasLt.so.13", "cuBLASLt", "nvidia-cublas~=13.0", _CU13),
    Library("libcublas.so.13", "cuBLAS", "nvidia-cublas~=13.0", _CU13),
    Library("libcurand.so.10", "cuRAND", "nvidia-curand~=10.0", _CU13),
    Library("libcufft.so.12", "cuFFT", "nvidia-cufft~=12.0", _CU13, required=False),
    Library("libnvrtc.so.13", "NVRTC", "nvidia-cuda-nvrtc~=13.0", _CU13, required=False),
    Library("libcudnn.so.9", "cuDNN 9", "nvidia-cudnn-cu13~=9.0", ("nvidia/cudnn/lib",)),
)
TENSORRT_LIBRARIES = (
    Library("libnvinfer.so.10", "TensorRT 10", "tensorrt-cu13-libs>=10.13,<11", ("tensorrt_libs",)),
    Library("libnvonnxparser.so.10", "TensorRT ONNX parser", "tensorrt-cu13-libs>=10.13,<11", ("tensorrt_libs",)),
)
PROVIDER_LIBRARIES: dict[str, tuple[Library, ...]] = {
    "cpu": (),
    "cuda": CUDA_LIBRARIES,
    "tensorrt": CUDA_LIBRARIES + TENSORRT_LIBRARIES,
}
# The extra that installs all of a provider's pip-installable libraries (pyproject.toml).
PROVIDER_EXTRA = {"cuda": "bench[cuda]", "tensorrt": "bench[tensorrt]"}


def parse_providers(text: str) -> list[str]:
    """``"cpu,cuda"`` → ``["cpu", "cuda"]``; an unknown name is a usage error listing the known ones."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names:
        raise InputError(f"no provider given; choose from {', '.join(PROVIDER_NAMES)}")
    for name in names:
        if name not in EP_NAMES:
            raise InputError(f"unknown provider {name!r}; choose from {', '.join(PROVIDER_NAMES)}")
    return list(dict.fromkeys(names))


def is_gpu(provider: str) -> bool:
    return provider in ("cuda", "tensorrt")


def provider_chain(
    provider: str, options: ProviderOptions, trt_cache: TrtCache | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The ORT ``providers=`` list for ``provider``: the requested EP first, then its fallbacks.

    ``trt_cache``: where TensorRT keeps this model's engine and its timing cache (:func:`trt_cache_for`).
    """
    cuda: dict[str, Any] = {"device_id": options.device_id}
    if options.cuda_graph and provider == "cuda":
        cuda["enable_cuda_graph"] = True
    cpu: tuple[str, dict[str, Any]] = ("CPUExecutionProvider", {})
    if provider == "cpu":
        return [cpu]
    if provider == "cuda":
        return [("CUDAExecutionProvider", cuda), cpu]
    if provider == "tensorrt":
        trt: dict[str, Any] = {
            "device_id": options.device_id,
            "trt_fp16_enable": options.trt_fp16,
            "trt_int8_enable": options.trt_int8,
        }
        if options.cuda_graph:
            trt["trt_cuda_graph_enable"] = True
        if trt_cache is not None:
            trt.update(trt_cache.ort_options())
        elif options.trt_cache_dir is not None:
            Path(options.trt_cache_dir).mkdir(parents=True, exist_ok=True)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(options.trt_cache_dir))
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {"device_id": options.device_id}), cpu]
    raise InputError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDER_NAMES)}")


@dataclass(frozen=True)
class TrtCache:
    """TensorRT's engine and timing caches for one model, keyed so that a stale engine is never reused.

    The engine folder is keyed by model sha256 + TensorRT version + GPU name + the options that change
    the engine (precision flags, CUDA graph, ORT version); the timing cache (per-layer kernel timings,
    valid for any model) by TensorRT version + GPU name only, so a new model still builds faster.
    """

    root: Path
    key: str
    key_inputs: dict[str, Any]
    engine_dir: Path
    timing_dir: Path

    def ort_options(self) -> dict[str, Any]:
        self.engine_dir.mkdir(parents=True, exist_ok=True)
        self.timing_dir.mkdir(parents=True, exist_ok=True)
        return {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.engine_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.timing_dir),
        }

    def engine_files(self) -> list[Path]:
        """The engines TensorRT wrote for this key (ORT names them ``*.engine``)."""
        return sorted(self.engine_dir.glob("*.engine")) if self.engine_dir.is_dir() else []

    def state(self) -> Literal["warm", "cold"]:
        """``warm`` when an engine for this key is on disk (it will be loaded, not built), else ``cold``."""
        return "warm" if self.engine_files() else "cold"


def trt_cache_for(
    root: Path, model_sha256: str, trt_version: str, gpu_name: str, options: ProviderOptions, ort_version: str
) -> TrtCache:
    """The cache folders for one (model, TensorRT, GPU, options) under ``root`` (``--trt-cache``)."""
    key_inputs = {
        "model_sha256": model_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "onnxruntime": ort_version,
        "fp16": options.trt_fp16,
        "int8": options.trt_int8,
        "cuda_graph": options.cuda_graph,
    }
    key = hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()[:16]
    timing_key = hashlib.sha256(json.dumps([trt_version, gpu_name]).encode()).hexdigest()[:12]
    root = Path(root)
    return TrtCache(
        root=root,
        key=key,
        key_inputs=key_inputs,
        engine_dir=root / f"engine-{key}",
        timing_dir=root / f"timing-{timing_key}",
    )


def compiled_in(provider: str) -> tuple[bool, str | None]:
    """Whether the installed ORT build has ``provider`` at all (says nothing about drivers)."""
    import onnxruntime as ort

    if EP_NAMES[provider] in ort.get_available_providers():
        return True, None
    return False, (
        f"{EP_NAMES[provider]} is not in this onnxruntime build ({ort.__version__}); "
        f"install onnxruntime-gpu ({fix_command(['onnxruntime-gpu==1.31.1'])})"
    )


def fix_command(packages: list[str]) -> str:
    """The exact pip command that installs ``packages`` into the Python running bench."""
    return " ".join([shlex.quote(sys.executable), "-m", "pip", "install", *(shlex.quote(p) for p in packages)])
