"""Fakes at the outermost GPU boundary only: the ``pynvml`` module (and, in tests, ORT's provider list and
the library probe's search folders)."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Mem:
    used: int
    total: int
    free: int = 0


@dataclass
class _Util:
    gpu: int
    memory: int = 0


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int | None


@dataclass
class NvmlState:
    """What the fake GPU reports right now; a test changes it between readings (clocks move, energy grows)."""

    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    power_mw: int = 180_000
    temperature_c: int = 55
    throttle_mask: int = 0
    energy_mj: int = 5_000_000
    energy_step_mj: int = 0  # added at every energy reading (a GPU drawing power)
    unsupported: set[str] = field(default_factory=set)  # NVML function names that raise NotSupported


def fake_pynvml(
    used_mb: float = 2329.0,
    total_mb: float = 6144.0,
    util: int = 30,
    pid: int | None = None,
    proc_mb: float | None = 1200.0,
    fail_init: bool = False,
    state: NvmlState | None = None,
    other_pids: tuple[int, ...] = (),
    fail_processes: bool = False,
) -> types.ModuleType:
    """A stand-in ``pynvml`` with one GPU (defaults: the seed report's 6 GB card at 2.3 GB used).

    ``pid``: the process NVML lists with ``proc_mb`` (None: the driver gives no per-process figure);
    ``other_pids``: processes it lists besides (e.g. host PIDs seen from a container).
    """
    mod = types.ModuleType("pynvml")
    mb = 1024 * 1024
    st = state or NvmlState()

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # pynvml's own name
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    def reading(name: str, value: Callable[[], object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            if name in st.unsupported:
                raise NVMLError_NotSupported("Not Supported")
            return value()

        return call

    def energy() -> int:
        st.energy_mj += st.energy_step_mj
        return st.energy_mj

    def processes(h: object) -> list[_Proc]:
        if fail_processes:
            raise NVMLError("Not Supported")
        listed = [_Proc(pid=other, usedGpuMemory=int(512 * mb)) for other in other_pids]
        if pid is not None:
            listed.append(_Proc(pid=pid, usedGpuMemory=None if proc_mb is None else int(proc_mb * mb)))
        return listed

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.NVMLError_NotSupported = NVMLError_NotSupported  # type: ignore[attr-defined]
    mod.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    mod.NVML_CLOCK_MEM = 2  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA Fake GPU 6GB"  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: "575.51"  # type: ignore[attr-defined]
    mod.nvmlSystemGetCudaDriverVersion = lambda: 12090  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: _Mem(used=int(used_mb * mb), total=int(total_mb * mb))  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: _Util(gpu=util)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = processes  # type: ignore[attr-defined]
    mod.nvmlDeviceGetClockInfo = lambda h, kind: reading(  # type: ignore[attr-defined]
        "nvmlDeviceGetClockInfo", lambda: st.sm_clock_mhz if kind == 1 else st.mem_clock_mhz
    )()
    mod.nvmlDeviceGetPowerUsage = reading("nvmlDeviceGetPowerUsage", lambda: st.power_mw)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetTemperature = reading("nvmlDeviceGetTemperature", lambda: st.temperature_c)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCurrentClocksEventReasons = reading(  # type: ignore[attr-defined]
        "nvmlDeviceGetCurrentClocksEventReasons", lambda: st.throttle_mask
    )
    mod.nvmlDeviceGetTotalEnergyConsumption = reading("nvmlDeviceGetTotalEnergyConsumption", energy)  # type: ignore[attr-defined]
    return mod
