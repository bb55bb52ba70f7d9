"""Background sampler: host memory and CPU (psutil) and GPU memory, utilisation, clocks, power and energy (NVML).

Means describe the *timed phase* only (the runner brackets its timed loop with :meth:`ResourceSampler.timed`),
so session creation (a TensorRT engine build, say) does not dilute them; peaks cover the whole cell,
session creation included, and the result says so (``means_over``, ``peaks_over``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.gpu import Gpu, GpuUnavailable

_MB = 1024 * 1024

# A clock that moved by more than this share of its highest reading during the timed phase makes the
# figures noisy: boost clocks, power capping or thermal throttling changed the speed of the hardware.
CLOCK_CHANGE_TOLERANCE = 0.02
# Reasons that say nothing about a slowed-down measurement (idle between calls; clocks fixed on purpose).
_BENIGN_THROTTLE = {"gpu_idle", "applications_clocks_setting"}


@dataclass
class MemoryStats:
    """Peaks (whole cell) and means (timed phase); GPU fields are None with a reason when not measured."""

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
    # added with the GPU telemetry (older results lack them)
    gpu_process_reason: str | None = None  # why gpu_process_peak_mb is None while the GPU was sampled
    gpu_device_scope: str | None = None  # what gpu_device_peak_mb covers: every process on the device
    means_over: str | None = None  # "timed" (the timed loop) or "cell" (no timed phase was marked)
    peaks_over: str | None = None  # "cell": session creation, warm-up and timed loop
    timed_samples: int | None = None
    gpu_telemetry: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Sample:
    t: float
    timed: bool
    rss: float
    cpu: float
    ram_pct: float
    gpu_dev: float | None = None
    gpu_util: float | None = None
    gpu_proc: float | None = None
    gpu: dict[str, Any] | None = None  # Gpu.telemetry()


@dataclass
class _Phase:
    """The timed phases so far (one per replicate): their total duration and energy, and the open one's start."""

    count: int = 0
    timed_s: float = 0.0
    energy_j: float | None = 0.0  # None once a phase had no reading at either end
    energy_problem: str | None = None
    start_t: float | None = None
    energy_start_j: float | None = None

    def begin(self, now: float, energy: float | None) -> None:
        self.start_t, self.energy_start_j = now, energy

    def end(self, now: float, energy: float | None) -> None:
        if self.start_t is None:
            return
        self.count += 1
        self.timed_s += now - self.start_t
        if self.energy_start_j is None or energy is None:
            self.energy_j, self.energy_problem = None, "this GPU has no total-energy counter"
        elif energy < self.energy_start_j:
            self.energy_j, self.energy_problem = None, "the energy counter went backwards (reset)"
        elif self.energy_j is not None:
            self.energy_j += energy - self.energy_start_j
        self.start_t = self.energy_start_j = None


@dataclass
class _State:
    samples: list[_Sample] = field(default_factory=list)
    phase: _Phase = field(default_factory=_Phase)
    timing: bool = False
    gpu_process_reason: str | None = None


class ResourceSampler:
    """Samples this process (and the GPU, when NVML works) at ``hz`` in a daemon thread.

    Use as a context manager around the whole cell, and :meth:`timed` around the timed loop::

        with ResourceSampler(hz=10, gpu_index=0) as sampler:
            engine = Engine(...)                         # peaks include this
            with sampler.timed():
                samples = timed_loop(...)                # means, utilisation and energy cover only this
        stats = sampler.stats(timed_images=len(samples) * batch_size)

    ``hz=0`` disables sampling (all fields None, reason given).
    """

    def __init__(self, hz: float = 10.0, gpu_index: int | None = 0, pid: int | None = None):
        self.hz = hz
        self.pid = pid or os.getpid()
        import psutil  # lazily: the CLI imports this module to parse flags, and psutil costs ~8 ms there

        self._psutil = psutil
        self._proc = psutil.Process(self.pid)
        self._state = _State()
        self._lock = threading.Lock()
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

    # --- the timed phase ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self) -> Iterator[ResourceSampler]:
        """Mark the block as the timed phase (a sample and an energy reading at each end)."""
        self.mark_timed_start()
        try:
            yield self
        finally:
            self.mark_timed_end()

    def mark_timed_start(self) -> None:
        """The timed loop begins now: means, utilisation, telemetry and energy count from here."""
        energy = self._energy_j()
        with self._lock:
            self._state.phase.begin(time.perf_counter(), energy)
            self._state.timing = True
        if self.hz > 0:
            self._sample()

    def mark_timed_end(self) -> None:
        """The timed loop ended now."""
        if self.hz > 0:
            self._sample()
        energy = self._energy_j()
        with self._lock:
            self._state.timing = False
            self._state.phase.end(time.perf_counter(), energy)

    # --- sampling -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        period = 1.0 / self.hz
        while not self._stop.wait(period):
            self._sample()

    def _energy_j(self) -> float | None:
        if self._gpu is None:
            return None
        with contextlib.suppress(Exception):
            return self._gpu.telemetry()["energy_j"]
        return None

    def _sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss / _MB
            cpu = self._proc.cpu_percent(None)
            ram = self._psutil.virtual_memory().percent
        except self._psutil.Error:
            return
        sample = _Sample(t=time.perf_counter(), timed=False, rss=rss, cpu=cpu, ram_pct=ram)
        gpu = self._gpu
        if gpu is not None:
            try:
                sample.gpu_dev = gpu.memory()[0]
                sample.gpu_util = gpu.utilization_pct()
                sample.gpu_proc, why = gpu.process_memory(self.pid)
                sample.gpu = gpu.telemetry()
            except Exception as exc:  # a GPU that goes away mid-run must not kill the measurement
                self._gpu_reason = f"NVML sampling failed: {exc}"
                self._gpu = None
                why = None
        with self._lock:
            sample.timed = self._state.timing
            self._state.samples.append(sample)
            if gpu is not None and sample.gpu_proc is None and why:
                self._state.gpu_process_reason = why

    # --- figures ------------------------------------------------------------------------------------

    def stats(self, timed_images: int | None = None) -> MemoryStats:
        """Peaks over the whole cell, means over the timed phase (all samples when none was marked).

        ``timed_images``: images processed in the timed phase, for energy per image.
        """
        if self.hz <= 0:
            return MemoryStats(gpu_reason="sampling disabled (--sample-hz 0)")
        with self._lock:
            samples = list(self._state.samples)
            phase = replace(self._state.phase)
            proc_reason = self._state.gpu_process_reason
        timed = [s for s in samples if s.timed]
        window = timed or samples
        out = MemoryStats(
            rss_peak_mb=_round(max((s.rss for s in samples), default=None)),
            rss_mean_mb=_round(_mean([s.rss for s in window])),
            # the first sample's CPU % covers the time before the window (or ORT's priming call): left out
            cpu_mean_pct=_round(_mean([s.cpu for s in (window[1:] or window)])),
            system_ram_peak_pct=_round(max((s.ram_pct for s in samples), default=None)),
            samples=len(samples),
            means_over="timed" if timed else "cell",
            peaks_over="cell",
            timed_samples=len(timed),
        )
        dev = [s.gpu_dev for s in samples if s.gpu_dev is not None]
        if not dev:
            out.gpu_reason = self._gpu_reason or "no GPU samples taken"
            return out
        gpu_window = [s for s in window if s.gpu_util is not None]
        out.gpu_device_peak_mb = _round(max(dev))
        out.gpu_device_scope = "device-wide: every process on this GPU, not only this one"
        out.gpu_total_mb = _round(self._gpu.memory()[1]) if self._gpu is not None else None
        util = [u for s in gpu_window if (u := s.gpu_util) is not None]  # all of gpu_window's
        out.gpu_util_mean_pct = _round(_mean(util))
        out.gpu_util_max_pct = _round(max(util, default=None))
        proc = [s.gpu_proc for s in samples if s.gpu_proc is not None]
        if proc:
            out.gpu_process_peak_mb = _round(max(proc))
        else:
            out.gpu_process_reason = proc_reason or "the driver does not report per-process GPU memory here"
            out.gpu_reason = f"per-process GPU memory not measured: {out.gpu_process_reason}"
        out.gpu_telemetry = summarise_telemetry(
            [s.gpu for s in gpu_window if s.gpu is not None], phase, timed_images, timed=bool(timed)
        )
        return out


def summarise_telemetry(
    readings: list[dict[str, Any]], phase: _Phase | None = None, timed_images: int | None = None, timed: bool = True
) -> dict[str, Any]:
    """Clocks, power and temperature (mean/min/max), throttle reasons seen, energy per image, noise flags."""

    def series(key: str) -> list[float]:
        return [r[key] for r in readings if r.get(key) is not None]

    out: dict[str, Any] = {"over": "timed" if timed else "cell", "readings": len(readings)}
    for key in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c"):
        values = series(key)
        out[key] = (
            {"mean": _round(_mean(values)), "min": _round(min(values)), "max": _round(max(values))} if values else None
        )
    seen = sorted({name for r in readings for name in (r.get("throttle_reasons") or [])})
    out["throttle_reasons"] = seen if any(r.get("throttle_reasons") is not None for r in readings) else None
    out.update(_energy(phase, timed_images))

    noise: list[str] = []
    for key, label in (("sm_clock_mhz", "SM clock"), ("mem_clock_mhz", "memory clock")):
        span = out[key]
        if span and span["max"] and (span["max"] - span["min"]) / span["max"] > CLOCK_CHANGE_TOLERANCE:
            noise.append(f"{label} changed during the run ({span['min']:g}–{span['max']:g} MHz)")
    slowdowns = [r for r in seen if r not in _BENIGN_THROTTLE]
    if slowdowns:
        noise.append(f"clocks throttled: {', '.join(slowdowns)}")
    out["clocks_changed"] = any("changed" in n for n in noise)
    out["noise"] = noise
    return out


def _energy(phase: _Phase | None, images: int | None) -> dict[str, Any]:
    """Energy over the timed phases from NVML's total-energy counter (mJ since the driver loaded)."""
    if phase is None or phase.count == 0:
        return {
            "energy_j": None,
            "energy_per_image_j": None,
            "timed_s": None,
            "energy_reason": "no timed phase was marked",
        }
    timed_s = _round(phase.timed_s, 4)
    if phase.energy_j is None:
        return {"energy_j": None, "energy_per_image_j": None, "timed_s": timed_s, "energy_reason": phase.energy_problem}
    per_image = phase.energy_j / images if images else None
    return {
        "energy_j": _round(phase.energy_j, 4),
        "energy_per_image_j": None if per_image is None else round(per_image, 6),
        "timed_s": timed_s,
        "energy_reason": None if images else "the number of images in the timed phase was not given",
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)
