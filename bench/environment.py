"""Environment fingerprint: versions, CPU, GPU, driver, CUDA libraries. Hostname-free."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from typing import Any

from bench.gpu import probe

_CUDA_LIBS = {
    "cudart": ("cudart",),
    "cublas": ("cublas", "cublasLt"),
    "cudnn": ("cudnn",),
    "tensorrt": ("nvinfer",),
}


def _version(dist: str) -> str | None:
    import importlib.metadata  # ~12 ms: only when a fingerprint is taken, not for `bench --help`

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ort_build() -> str:
    """Which ORT distribution is installed: ``gpu`` (onnxruntime-gpu) or ``cpu``."""
    return "gpu" if _version("onnxruntime-gpu") else "cpu"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_libraries() -> dict[str, str | None]:
    """Which CUDA/cuDNN/TensorRT shared libraries the dynamic loader (or pip's nvidia-* wheels) can find."""
    import ctypes.util  # ~5 ms (it imports subprocess machinery): only when a fingerprint is taken

    found: dict[str, str | None] = {}
    for key, names in _CUDA_LIBS.items():
        hit = None
        for name in names:
            hit = ctypes.util.find_library(name)
            if hit:
                break
        if not hit:
            dist = {
                "cudart": "nvidia-cuda-runtime-cu12",
                "cublas": "nvidia-cublas-cu12",
                "cudnn": "nvidia-cudnn-cu12",
                "tensorrt": "tensorrt",
            }[key]
            ver = _version(dist) or _version(dist.replace("cu12", "cu13"))
            hit = f"pip:{dist}=={ver}" if ver else None
        found[key] = hit
    return found


def fingerprint(gpu_index: int = 0) -> dict[str, Any]:
    """The environment object stored in every results file (results contract)."""
    import numpy
    import onnxruntime as ort
    import psutil

    gpu, gpu_reason = probe(gpu_index)
    env: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "onnxruntime_build": ort_build(),
        "onnxruntime_providers_compiled": ort.get_available_providers(),
        "onnx": _version("onnx"),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "bench": _version("bench"),
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "cpu": {
            "model": cpu_model(),
            "cores_physical": psutil.cpu_count(logical=False),
            "cores_logical": psutil.cpu_count(logical=True),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        },
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
        "gpu": gpu.describe() if gpu is not None else None,
        "gpu_reason": gpu_reason,
        "cuda_libraries": cuda_libraries(),
    }
    env["machine_id"] = machine_id(env)
    return env


def machine_id(env: Mapping[str, Any]) -> str:
    """Short hash of the hardware two runs must share to be comparable: CPU model, logical cores, RAM
    (whole GiB), GPU name and machine architecture. Software versions are not in it: compare warns on those."""
    key = {
        "cpu": env.get("cpu", {}).get("model"),
        "cores": env.get("cpu", {}).get("cores_logical"),
        "memory_total_mb": round((env.get("memory_total_mb") or 0) / 1024),
        "gpu": (env.get("gpu") or {}).get("name"),
        "machine": env.get("platform", {}).get("machine"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
