"""Warm-up + timed loop, and latency statistics derived from raw samples."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.errors import InputError


@dataclass(frozen=True)
class LoopSpec:
    """How long to measure: ``warmup`` uncounted calls, then ``iterations`` timed calls.

    With ``min_time_s`` the loop keeps going until that many seconds have passed *and* at least
    ``iterations`` calls were timed (pytest-benchmark's min_rounds + min_time rule).
    """

    iterations: int = 100
    warmup: int = 10
    min_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InputError(f"--iterations must be ≥ 1, got {self.iterations}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be ≥ 0, got {self.warmup}")
        if self.min_time_s is not None and self.min_time_s <= 0:
            raise InputError(f"--min-time must be > 0 seconds, got {self.min_time_s}")


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Objects alive now (imported modules, the process's setup) leave the garbage collector's view for the
    block: the collections between replicates then scan only what the measurement made (12 ms → well under
    1 ms each with onnxruntime, numpy and pydantic loaded)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def timed_loop(
    call: Callable[[], Any],
    spec: LoopSpec,
    on_progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``call`` ``spec.warmup`` times untimed, then time each call with perf_counter_ns; ms samples.

    Python's garbage collector is off while calls are timed (a collection would land inside some
    call's time): garbage is collected once before timing and collection resumes after.
    ``on_progress`` is for tests and scripts; the CLI draws progress between replicates instead.
    """
    for _ in range(spec.warmup):
        call()
    samples: list[float] = []
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.collect(0)  # the young generation only: older objects were collected between replicates
    gc.disable()
    try:
        deadline = None if spec.min_time_s is None else clock() + int(spec.min_time_s * 1e9)
        while len(samples) < spec.iterations or (deadline is not None and clock() < deadline):
            t0 = clock()
            call()
            samples.append((clock() - t0) / 1e6)
            if on_progress is not None:
                on_progress(len(samples), samples[-1])
    finally:
        if was_enabled:
            gc.enable()
    return samples


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency statistics in milliseconds, derived from raw samples."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
        return cls(
            n=int(x.size),
            mean=float(x.mean()),
            std=float(x.std(ddof=1)) if x.size > 1 else 0.0,
            min=float(x.min()),
            max=float(x.max()),
            p50=float(p50),
            p90=float(p90),
            p95=float(p95),
            p99=float(p99),
        )

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def bootstrap_ratio(
    current: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.median,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high): statistic(current) / statistic(baseline) with a percentile-bootstrap interval."""
    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap needs samples on both sides")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = rng.integers(0, b.size, size=(n_boot, b.size))
    if statistic is np.median:
        num, den = np.median(a[ia], axis=1), np.median(b[ib], axis=1)
    else:
        num = np.apply_along_axis(statistic, 1, a[ia])
        den = np.apply_along_axis(statistic, 1, b[ib])
    ratios = num / den
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return float(statistic(a) / statistic(b)), float(low), float(high)
