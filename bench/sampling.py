"""Background sampler: host memory and CPU (psutil) and GPU memory and utilisation (NVML)."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field

from bench.gpu import Gpu, GpuUnavailable

_MB = 1024 * 1024


@dataclass
class MemoryStats:
    """Peaks and means over a measurement; GPU fields are None with ``gpu_reason`` when not measured."""

    rss_peak_mb: float | None = None
    rss_mean_mb: float | None = None
    cpu_mean_pct: float | None = None
    system_ram_peak_pct: float | None = None
    gpu_process_peak_mb: float | None = None
    gpu_device_peak_mb: float | None = None
    gpu_total_mb: float | None = None
    gpu_util_mean_pct: float | None = None
    gpu_util_max_pct: float | None = None
    gpu_reason: str | None = None
    samples: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Series:
    rss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    ram_pct: list[float] = field(default_factory=list)
    gpu_proc: list[float] = field(default_factory=list)
    gpu_dev: list[float] = field(default_factory=list)
    gpu_util: list[float] = field(default_factory=list)


class ResourceSampler:
    """Samples this process (and the GPU, when NVML works) at ``hz`` in a daemon thread.

    Use as a context manager around the measured region; ``stats()`` then gives peaks and means.
    ``hz=0`` disables sampling (all fields None, reason given).
    """

    def __init__(self, hz: float = 10.0, gpu_index: int | None = 0, pid: int | None = None):
        self.hz = hz
        self.pid = pid or os.getpid()
        import psutil  # lazily: the CLI imports this module to parse flags, and psutil costs ~8 ms there

        self._psutil = psutil
        self._proc = psutil.Process(self.pid)
        self._series = _Series()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpu: Gpu | None = None
        self._gpu_reason: str | None = None
        if gpu_index is None:
            self._gpu_reason = "GPU not sampled for a CPU cell"
        else:
            try:
                self._gpu = Gpu.open(gpu_index)
            except GpuUnavailable as exc:
                self._gpu_reason = str(exc)

    def __enter__(self) -> ResourceSampler:
        if self.hz > 0:
            self._proc.cpu_percent(None)  # prime: the first call always returns 0.0
            self._sample()
            self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()

    def _loop(self) -> None:
        period = 1.0 / self.hz
        while not self._stop.wait(period):
            self._sample()

    def _sample(self) -> None:
        s = self._series
        try:
            s.rss.append(self._proc.memory_info().rss / _MB)
            s.cpu.append(self._proc.cpu_percent(None))
            s.ram_pct.append(self._psutil.virtual_memory().percent)
        except self._psutil.Error:
            return
        if self._gpu is not None:
            try:
                used, _total = self._gpu.memory()
                s.gpu_dev.append(used)
                s.gpu_util.append(self._gpu.utilization_pct())
                proc = self._gpu.process_memory_mb(self.pid)
                if proc is not None:
                    s.gpu_proc.append(proc)
            except Exception as exc:  # a GPU that goes away mid-run must not kill the measurement
                self._gpu_reason = f"NVML sampling failed: {exc}"
                self._gpu = None

    def stats(self) -> MemoryStats:
        s = self._series
        if self.hz <= 0:
            return MemoryStats(gpu_reason="sampling disabled (--sample-hz 0)")
        out = MemoryStats(
            rss_peak_mb=_round(max(s.rss, default=None)),
            rss_mean_mb=_round(_mean(s.rss)),
            cpu_mean_pct=_round(_mean(s.cpu[1:] or s.cpu)),
            system_ram_peak_pct=_round(max(s.ram_pct, default=None)),
            samples=len(s.rss),
        )
        if s.gpu_dev:
            out.gpu_device_peak_mb = _round(max(s.gpu_dev))
            out.gpu_total_mb = _round(self._gpu.memory()[1]) if self._gpu is not None else None
            out.gpu_util_mean_pct = _round(_mean(s.gpu_util))
            out.gpu_util_max_pct = _round(max(s.gpu_util))
            if s.gpu_proc:
                out.gpu_process_peak_mb = _round(max(s.gpu_proc))
            else:
                out.gpu_reason = "the driver does not report per-process GPU memory here"
        else:
            out.gpu_reason = self._gpu_reason or "no GPU samples taken"
        return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)
