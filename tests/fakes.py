"""Fakes at the outermost GPU boundary only: the ``pynvml`` module."""

from __future__ import annotations

import types
from dataclasses import dataclass


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


def fake_pynvml(
    used_mb: float = 2329.0,
    total_mb: float = 6144.0,
    util: int = 30,
    pid: int | None = None,
    proc_mb: float = 1200.0,
    fail_init: bool = False,
) -> types.ModuleType:
    """A stand-in ``pynvml`` with one GPU (defaults: the seed report's 6 GB card at 2.3 GB used)."""
    mod = types.ModuleType("pynvml")
    mb = 1024 * 1024

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA Fake GPU 6GB"  # type: ignore[attr-defined]
    mod.nvmlSystemGetDriverVersion = lambda: "575.51"  # type: ignore[attr-defined]
    mod.nvmlSystemGetCudaDriverVersion = lambda: 12090  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: _Mem(used=int(used_mb * mb), total=int(total_mb * mb))  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUtilizationRates = lambda h: _Util(gpu=util)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: (  # type: ignore[attr-defined]
        [_Proc(pid=pid, usedGpuMemory=int(proc_mb * mb))] if pid is not None else []
    )
    return mod
