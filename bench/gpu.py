"""NVML boundary: one GPU's name, driver, memory and utilisation (nvidia-ml-py, imported as ``pynvml``).

Everything GPU-related that bench reads goes through :class:`Gpu`, so tests fake exactly one thing:
the ``pynvml`` module.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

_MB = 1024 * 1024
_init_lock = threading.Lock()


class GpuUnavailable(RuntimeError):
    """No usable NVIDIA GPU; the message is the one-line reason."""


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a declared dependency
        raise GpuUnavailable("NVML bindings not installed (pip install nvidia-ml-py)") from exc
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Gpu:
    """An open NVML handle to one device."""

    index: int
    handle: Any
    nvml: Any

    @classmethod
    def open(cls, index: int = 0) -> Gpu:
        """Initialise NVML and open device ``index``; raise GpuUnavailable with the reason."""
        nvml = _nvml()
        try:
            with _init_lock:
                nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            raise GpuUnavailable(f"NVML not usable ({_reason(exc)}): no NVIDIA driver on this machine") from exc
        try:
            count = nvml.nvmlDeviceGetCount()
            if index >= count:
                raise GpuUnavailable(f"GPU {index} not present ({count} NVIDIA GPU(s) found)")
            return cls(index=index, handle=nvml.nvmlDeviceGetHandleByIndex(index), nvml=nvml)
        except GpuUnavailable:
            raise
        except Exception as exc:
            raise GpuUnavailable(f"NVML could not open GPU {index}: {_reason(exc)}") from exc

    def describe(self) -> dict[str, Any]:
        """Name, driver, CUDA driver version and total memory, for the environment fingerprint."""
        cuda = self.nvml.nvmlSystemGetCudaDriverVersion()
        return {
            "index": self.index,
            "name": _text(self.nvml.nvmlDeviceGetName(self.handle)),
            "driver": _text(self.nvml.nvmlSystemGetDriverVersion()),
            "cuda": f"{cuda // 1000}.{(cuda % 1000) // 10}",
            "memory_total_mb": round(self.memory()[1], 1),
        }

    def memory(self) -> tuple[float, float]:
        """(used, total) device memory in MB."""
        info = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        return info.used / _MB, info.total / _MB

    def utilization_pct(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def process_memory_mb(self, pid: int) -> float | None:
        """Device memory held by ``pid``; None when the driver does not say (e.g. in some containers)."""
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:
            return None
        used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
        return sum(used) / _MB if used else 0.0


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def probe(index: int = 0) -> tuple[Gpu | None, str | None]:
    """(gpu, None) when NVML works, else (None, reason)."""
    try:
        return Gpu.open(index), None
    except GpuUnavailable as exc:
        return None, str(exc)
