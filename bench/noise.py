"""What else the machine was doing while a cell was timed: the noise behind a latency figure.

On a shared machine a neighbour's busy core can move a median by tens of percent. Each timed phase
records the load average, the CPU time other processes used (system-wide busy time minus this
process's own), hypervisor steal time where the kernel reports it, and the CPU frequency where
readable; a cell is flagged ``noisy`` when others used more than ``OTHERS_CPU_NOISY`` of a core or
steal exceeded ``STEAL_NOISY_PCT``. Compare names noisy sides in a verdict's "why".

A noisy cell is also ``contended`` when bench's own intra-op threads plus the others' load exceed the
CPUs (by more than OTHERS_CPU_NOISY): then bench's threads wait for a core inside every parallel
operator, which adds a delay to both sides of an A/B and *dilutes* the difference, not just blurs it
(measured on a 2-core box beside a one-core hog: a conv net +24 % slower read +9 % with 2 threads,
+24 % with ``--threads 1``). The why then says to measure with fewer threads than the idle CPUs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

OTHERS_CPU_NOISY = 0.25  # cores: a quarter of a core used by other processes, on average over the timed phase
STEAL_NOISY_PCT = 2.0  # % of all CPUs' time taken by the hypervisor


def _busy_seconds(times: Any) -> float:
    """System-wide busy CPU seconds from psutil.cpu_times() (everything but idle and iowait)."""
    fields = times._asdict()
    return sum(v for k, v in fields.items() if k not in ("idle", "iowait", "guest", "guest_nice"))


def _freq_mhz() -> float | None:
    import psutil

    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    return round(float(freq.current), 1) if freq and freq.current else None


def noise_reasons(
    others_cores: float, steal_pct: float | None, threads: int | None, cpus: int
) -> tuple[list[str], bool]:
    """(why the phase was noisy, whether bench's ``threads`` had to share CPUs with the others)."""
    reasons = []
    contended = False
    if others_cores > OTHERS_CPU_NOISY:
        reasons.append(f"other processes used {others_cores:.2f} cores")
        # the same quarter-core slack as "noisy": others at 1.01 cores beside 1 thread on 2 CPUs is not sharing
        if threads is not None and threads + others_cores > cpus + OTHERS_CPU_NOISY:
            contended = True
            fewer = fitting_threads(others_cores, threads, cpus)
            fix = f"--threads {fewer} or a quiet machine" if fewer is not None else "a quiet machine"
            reasons.append(
                f"bench's {threads} intra-op thread{'s' if threads != 1 else ''} shared {cpus} CPUs with them, "
                f"which dilutes latency differences: measure with {fix}"
            )
    if steal_pct is not None and steal_pct > STEAL_NOISY_PCT:
        reasons.append(f"steal {steal_pct:.1f}%")
    return reasons, contended


def fitting_threads(others_cores: float, threads: int, cpus: int) -> int | None:
    """Fewer intra-op threads than ``threads`` that fit in the CPUs the others leave idle (at least 1), or None
    when there is nothing fewer to fit (one thread already)."""
    fewer = max(1, min(threads - 1, int(cpus - others_cores + 0.5)))
    return fewer if fewer < threads else None


def intra_op_threads(threads: int | None) -> int:
    """The intra-op threads a CPU session runs: ``--threads`` or ORT's default, one per physical core."""
    if threads:
        return threads
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class NoiseProbe:
    """Context manager around a timed phase; ``figures()`` afterwards gives the Noise object of a cell.

    Several phases (one per replicate) accumulate: the figures cover timed calls only, not session
    creation or warm-up. ``threads``: the CPU threads the measured session computes with (None for
    GPU providers, where the CPU only launches work), for the contention check. ``own_pids``: processes whose
    CPU time is part of the measurement, not noise (the served model beside a load generator), with the
    children they have when a phase starts.
    """

    def __init__(self, threads: int | None = None, own_pids: Sequence[int] = ()) -> None:
        import psutil

        self._threads = threads
        self._psutil = psutil
        self._proc = psutil.Process()
        self._own_pids = tuple(own_pids)
        self._helpers: dict[int, Any] = {}  # pid → psutil.Process of own_pids and their children
        self._helper_cpu: dict[int, float] = {}  # pid → its CPU seconds when last read (kept once it exits)
        self._wall = 0.0
        self._others = 0.0
        self._steal: float | None = None
        self._start_state: tuple[float, float, float, float | None] | None = None
        self._load: list[float] = []
        self._freq: list[float | None] = []

    def _state(self) -> tuple[float, float, float, float | None]:
        cpu = self._psutil.cpu_times()
        own = self._proc.cpu_times()
        steal = getattr(cpu, "steal", None)
        return time.monotonic(), _busy_seconds(cpu), own.user + own.system + self._helpers_cpu(), steal

    def _find_helpers(self) -> None:
        """The own_pids processes and their children now (a server's workers start after it)."""
        psutil = self._psutil
        for pid in self._own_pids:
            try:
                root = self._helpers.get(pid) or psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for proc in family:
                self._helpers.setdefault(proc.pid, proc)

    def _helpers_cpu(self) -> float:
        """CPU seconds of the own_pids processes; one that has exited counts its last reading."""
        for pid, proc in self._helpers.items():
            try:
                times = proc.cpu_times()
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            self._helper_cpu[pid] = times.user + times.system
        return sum(self._helper_cpu.values())

    def __enter__(self) -> NoiseProbe:
        if not self._load:
            self._load.append(round(os.getloadavg()[0], 2))
            self._freq.append(_freq_mhz())
        self._find_helpers()
        self._start_state = self._state()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._start_state is None:
            return
        t1, busy1, own1, steal1 = self._state()
        t0, busy0, own0, steal0 = self._start_state
        self._wall += t1 - t0
        # steal is part of busy time in /proc/stat accounting; it is not another process's work
        steal = (steal1 - steal0) if steal0 is not None and steal1 is not None else None
        self._others += max(0.0, (busy1 - busy0) - (own1 - own0) - (steal or 0.0))
        if steal is not None:
            self._steal = (self._steal or 0.0) + steal
        self._start_state = None

    def figures(self) -> dict[str, Any]:
        """The Noise object (results contract) over every phase measured so far."""
        cpus = os.cpu_count() or 1
        wall = max(self._wall, 1e-9)
        others = self._others / wall
        steal_pct = None if self._steal is None else 100.0 * self._steal / (wall * cpus)
        load = [*self._load, round(os.getloadavg()[0], 2)]
        freq = [*self._freq, _freq_mhz()]
        reasons, contended = noise_reasons(others, steal_pct, self._threads, cpus)
        figures: dict[str, Any] = {
            "wall_s": round(self._wall, 4),
            "loadavg_1m": load,
            "cpu_count": cpus,
            "others_cpu_cores": round(others, 3),
            "steal_pct": None if steal_pct is None else round(steal_pct, 3),
            "cpu_freq_mhz": freq if any(f is not None for f in freq) else None,
            "noisy": bool(reasons),
            "why": "; ".join(reasons) or None,
        }
        if self._threads is not None:
            figures["threads"] = self._threads
            figures["contended"] = contended
        return figures


def load_difference(baseline: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> str | None:
    """Why two measurements' neighbours differ enough to explain a latency difference (others' CPU apart by
    more than ``OTHERS_CPU_NOISY``), or None; seen: an A/A pair reading ×0.70 at 1.05 vs 0.69 cores."""
    before, after = ((n or {}).get("others_cpu_cores") for n in (baseline, current))
    if before is None or after is None or abs(after - before) <= OTHERS_CPU_NOISY:
        return None
    return f"other processes used {before:.2f} vs {after:.2f} cores"


def noisy_figure(measured: Any) -> str | None:
    """Why a figure must not decide anything (a recommendation, claim or check re-measures it or stays
    undecided), or None when it was measured quietly.

    ``measured``: a cell (``.noise`` and ``.memory``), a mapping with a ``noise`` key (a service entry, a
    find-max answer) or a Noise object itself. Noisy or contended CPU time and the GPU's own noise (clocks
    that moved, throttling) both count.
    """
    if isinstance(measured, Mapping):
        noise = measured if "noisy" in measured else measured.get("noise")
        memory = measured.get("memory")
    else:
        noise, memory = getattr(measured, "noise", None), getattr(measured, "memory", None)
    reasons: list[str] = []
    if noise and (noise.get("noisy") or noise.get("contended")):
        reasons.append(noise.get("why") or "measured while other processes used the CPU")
    telemetry = (memory or {}).get("gpu_telemetry") or {}
    reasons += [str(r) for r in telemetry.get("noise") or []]
    return "; ".join(reasons) or None


def combine_noise(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One Noise object for phases measured apart (blocks in fresh processes): load weighted by each
    phase's wall time, the flags judged again on the whole."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return parts[0] if parts else None
    wall = sum(p["wall_s"] for p in parts) or 1e-9
    others = sum(p["others_cpu_cores"] * p["wall_s"] for p in parts) / wall
    have_steal = all(p.get("steal_pct") is not None for p in parts)
    steal_pct = sum(p["steal_pct"] * p["wall_s"] for p in parts) / wall if have_steal else None
    threads, cpus = parts[0].get("threads"), parts[0]["cpu_count"]
    reasons, contended = noise_reasons(others, steal_pct, threads, cpus)
    freqs = [p.get("cpu_freq_mhz") for p in parts]
    figures: dict[str, Any] = {
        "wall_s": round(wall, 4),
        "loadavg_1m": [parts[0]["loadavg_1m"][0], parts[-1]["loadavg_1m"][-1]],
        "cpu_count": cpus,
        "others_cpu_cores": round(others, 3),
        "steal_pct": None if steal_pct is None else round(steal_pct, 3),
        "cpu_freq_mhz": [freqs[0][0], freqs[-1][-1]] if freqs[0] and freqs[-1] else None,
        "noisy": bool(reasons),
        "why": "; ".join(reasons) or None,
    }
    if threads is not None:
        figures["threads"], figures["contended"] = threads, contended
    return figures


__all__ = [
    "OTHERS_CPU_NOISY",
    "STEAL_NOISY_PCT",
    "NoiseProbe",
    "combine_noise",
    "fitting_threads",
    "intra_op_threads",
    "load_difference",
    "noise_reasons",
    "noisy_figure",
]
