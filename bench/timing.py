"""Warm-up + timed loop, and latency statistics derived from raw samples."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.options import LoopSpec


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
