"""NVML boundary: one GPU's name, driver, memory, utilisation, clocks, power and energy (nvidia-ml-py, ``pynvml``).

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

    def process_memory(self, pid: int) -> tuple[float | None, str | None]:
        """(MB held by ``pid``, None) or (None, why it cannot be attributed).

        A process NVML does not list is *not measured*, never 0 MB: in containers with their own PID
        namespace the driver lists host PIDs, so this process is absent even while it holds memory.
        """
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception as exc:
            return None, f"NVML cannot list the processes on GPU {self.index} ({_reason(exc)})"
        mine = [p for p in procs if p.pid == pid]
        if not mine:
            return None, (
                f"NVML does not list this process (PID {pid}) on GPU {self.index} "
                f"({len(procs)} other process(es) listed; a container's PID namespace hides it)"
            )
        used = [p.usedGpuMemory for p in mine if p.usedGpuMemory is not None]
        if not used:
            return None, "the driver lists this process but not its memory (usedGpuMemory unavailable)"
        return sum(used) / _MB, None

    def telemetry(self) -> dict[str, Any]:
        """One reading of clocks, power, temperature, throttle reasons and the energy counter.

        A reading the GPU does not support is None (e.g. the energy counter before Volta); the keys
        are always there, so a series of readings has one shape.
        """
        nvml, h = self.nvml, self.handle
        reasons = _optional(lambda: _clock_event_reasons(nvml, h))
        power_mw = _optional(lambda: nvml.nvmlDeviceGetPowerUsage(h))
        energy_mj = _optional(lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(h))
        return {
            "sm_clock_mhz": _optional(lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))),
            "mem_clock_mhz": _optional(lambda: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))),
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "temperature_c": _optional(lambda: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
            "throttle_reasons": None if reasons is None else throttle_reason_names(reasons),
            "energy_j": None if energy_mj is None else energy_mj / 1000.0,
        }


# NVML's clocks-event (formerly "throttle") reason bits; stable across driver versions.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_reason_names(mask: int) -> list[str]:
    """NVML's reason bitmask → names, e.g. ``0x24`` → ``["sw_power_cap", "sw_thermal_slowdown"]``."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return [*names, f"other_0x{unknown:x}"] if unknown else names


def _clock_event_reasons(nvml: Any, handle: Any) -> int:
    get = (
        getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    )
    return int(get(handle))


def _optional(read: Any) -> Any:
    """A reading, or None when this GPU or driver does not support it."""
    try:
        return read()
    except Exception:
        return None


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def probe(index: int = 0) -> tuple[Gpu | None, str | None]:
    """(gpu, None) when NVML works, else (None, reason)."""
    try:
        return Gpu.open(index), None
    except GpuUnavailable as exc:
        return None, str(exc)
