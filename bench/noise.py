"""What else the machine was doing while a cell was timed: the noise behind a latency figure.

On a shared machine a neighbour's busy core can move a median by tens of percent. Each timed phase
records the load average, the CPU time other processes used (system-wide busy time minus this
process's own), hypervisor steal time where the kernel reports it, and the CPU frequency where
readable; a cell is flagged ``noisy`` when others used more than ``OTHERS_CPU_NOISY`` of a core or
steal exceeded ``STEAL_NOISY_PCT``. Compare names noisy sides in a verdict's "why".
"""

from __future__ import annotations

import os
import time
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


class NoiseProbe:
    """Context manager around a timed phase; ``figures()`` afterwards gives the Noise object of a cell.

    Several phases (one per replicate) accumulate: the figures cover timed calls only, not session
    creation or warm-up.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
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
        return time.monotonic(), _busy_seconds(cpu), own.user + own.system, steal

    def __enter__(self) -> NoiseProbe:
        if not self._load:
            self._load.append(round(os.getloadavg()[0], 2))
            self._freq.append(_freq_mhz())
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
        reasons = []
        if others > OTHERS_CPU_NOISY:
            reasons.append(f"other processes used {others:.2f} cores")
        if steal_pct is not None and steal_pct > STEAL_NOISY_PCT:
            reasons.append(f"steal {steal_pct:.1f}%")
        return {
            "wall_s": round(self._wall, 4),
            "loadavg_1m": load,
            "cpu_count": cpus,
            "others_cpu_cores": round(others, 3),
            "steal_pct": None if steal_pct is None else round(steal_pct, 3),
            "cpu_freq_mhz": freq if any(f is not None for f in freq) else None,  # type: ignore[dict-item]
            "noisy": bool(reasons),
            "why": "; ".join(reasons) or None,
        }


__all__ = ["OTHERS_CPU_NOISY", "STEAL_NOISY_PCT", "NoiseProbe"]
