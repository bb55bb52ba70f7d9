"""Environment fingerprint: versions, CPU, GPU, driver, CUDA libraries (found where, or the fix). Hostname-free."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.cpufeatures import cpu_features
from bench.gpu import probe
from bench.providers import PROVIDER_EXTRA, PROVIDER_LIBRARIES, TENSORRT_LIBRARIES, Library, fix_command

# The legacy ``cuda_libraries`` summary: key → the library that stands for it.
_SUMMARY_LIBS = {
    "cudart": "libcudart.so.13",
    "cublas": "libcublasLt.so.13",
    "cudnn": "libcudnn.so.9",
    "tensorrt": "libnvinfer.so.10",
}
# Where CUDA lives when it was installed without pip (toolkit, distribution packages, containers).
_SYSTEM_DIRS = ("/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib")


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


def site_packages_dirs() -> list[Path]:
    """Every site-packages folder of this Python (where pip puts the nvidia-* and tensorrt wheels)."""
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages(), *(p for p in sys.path if p.endswith("-packages"))]
    return list(dict.fromkeys(Path(d) for d in dirs if d))


@functools.cache
def ld_cache() -> dict[str, str]:
    """soname → path from the dynamic loader's cache (``ldconfig -p``); empty where there is none."""
    import subprocess

    for tool in ("ldconfig", "/sbin/ldconfig"):
        try:
            text = subprocess.run([tool, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        entries = [line.strip().partition(" => ") for line in text.splitlines()]
        rows = sorted((e for e in entries if e[1]), key=lambda e: "64" not in e[0])  # 64-bit builds first
        found: dict[str, str] = {}
        for name, _, path in rows:
            found.setdefault(name.split(" (", 1)[0], path.strip())
        return found
    return {}


def find_library(
    lib: Library, site_dirs: list[Path] | None = None, cache: dict[str, str] | None = None
) -> tuple[str | None, list[str]]:
    """(path of ``lib`` or None, the places looked): pip's folder first, then LD_LIBRARY_PATH, the
    loader cache and the usual system folders, the order in which ORT's preload and the loader find it."""
    site_dirs = site_packages_dirs() if site_dirs is None else site_dirs
    cache = ld_cache() if cache is None else cache
    looked: list[str] = []
    candidates = [d / rel for rel in lib.pip_dirs for d in site_dirs]
    candidates += [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    for folder in candidates:
        looked.append(str(folder))
        if (folder / lib.soname).is_file():
            return str(folder / lib.soname), looked
    looked.append("ldconfig cache")
    if lib.soname in cache:
        return cache[lib.soname], looked
    for folder in map(Path, _SYSTEM_DIRS):
        looked.append(str(folder))
        if (folder / lib.soname).is_file():
            return str(folder / lib.soname), looked
    return None, looked


def provider_libraries(
    provider: str, site_dirs: list[Path] | None = None, cache: dict[str, str] | None = None
) -> dict[str, Any]:
    """Each library ``provider`` loads: found (where) or missing (where looked, and the pip command that fixes it)."""
    rows: list[dict[str, Any]] = []
    for lib in PROVIDER_LIBRARIES[provider]:
        path, looked = find_library(lib, site_dirs, cache)
        fix = None
        if path is None:
            fix = fix_command([lib.pip]) if lib.pip else "install the NVIDIA driver (not a pip package)"
        rows.append(
            {
                "name": lib.soname,
                "what": lib.what,
                "required": lib.required,
                "found": path,
                "looked": looked,
                "package": lib.pip,
                "fix": fix,
            }
        )
    missing = [r for r in rows if r["found"] is None and r["required"]]
    packages = list(dict.fromkeys(r["package"] for r in missing if r["package"]))
    return {
        "libraries": rows,
        "missing": [r["name"] for r in missing],
        "fix": fix_command(packages) if packages else None,
        "extra": PROVIDER_EXTRA.get(provider),
        "driver_missing": any(r["package"] is None for r in missing),
    }


def cuda_libraries(site_dirs: list[Path] | None = None, cache: dict[str, str] | None = None) -> dict[str, str | None]:
    """The summary stored in every fingerprint: where cudart, cuBLAS, cuDNN and TensorRT were found (None: missing)."""
    libs = {lib.soname: lib for lib in PROVIDER_LIBRARIES["tensorrt"]}
    return {key: find_library(libs[soname], site_dirs, cache)[0] for key, soname in _SUMMARY_LIBS.items()}


def tensorrt_version() -> str | None:
    """The TensorRT version ORT's TensorRT provider will load: the pip wheel's, else the system library's."""
    for dist in ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs", "tensorrt-cu13", "tensorrt"):
        version = _version(dist)
        if version:
            return version
    path, _ = find_library(PROVIDER_LIBRARIES["tensorrt"][-2])
    if path:
        real = Path(path).resolve().name  # libnvinfer.so.10.16.1 → 10.16.1
        return real.split(".so.", 1)[1] if ".so." in real else None
    return None


def preload_tensorrt() -> list[str]:
    """Load pip's TensorRT libraries globally, so ORT's TensorRT provider finds them (it does not look in
    site-packages itself, and ``onnxruntime.preload_dlls`` covers only CUDA and cuDNN). Returns what it loaded."""
    import ctypes

    loaded = []
    for lib in TENSORRT_LIBRARIES:
        path, _ = find_library(lib)
        if path is None:
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            loaded.append(path)
        except OSError:
            continue
    return loaded


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
            "features": cpu_features(),  # AVX2/AVX-512/VNNI/BF16/FP16/AMX/NEON/SVE (bench.cpufeatures)
        },
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20),
        "gpu": gpu.describe() if gpu is not None else None,
        "gpu_reason": gpu_reason,
        "cuda_libraries": cuda_libraries(),
        "tensorrt": tensorrt_version(),
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
