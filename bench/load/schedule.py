"""When an open-loop run sends each request: evenly spaced, or a seeded Poisson process.

The schedule is fixed before the first request, so a slow server cannot slow the generator down
(latency is measured from these scheduled times).
"""

from __future__ import annotations

import math

import numpy as np

from bench.load.spec import DEFAULT_MAX_REQUESTS


def arrival_offsets(
    rate: float, duration_s: float, arrival: str, seed: int = 0, cap: int = DEFAULT_MAX_REQUESTS
) -> np.ndarray:
    """Scheduled send times in seconds from the start: evenly spaced, or a seeded Poisson process."""
    if arrival == "constant":
        n = min(cap, math.floor(rate * duration_s + 1e-9))
        return np.arange(n, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    chunks: list[np.ndarray] = []
    t = 0.0
    for _ in range(64):  # bounded: each chunk covers ~expected + 10σ arrivals
        gaps = rng.exponential(1.0 / rate, size=int(expected + 10 * math.sqrt(expected) + 16))
        times = t + np.cumsum(gaps)
        chunks.append(times)
        t = float(times[-1])
        if t >= duration_s or sum(c.size for c in chunks) >= cap:
            break
    offsets = np.concatenate(chunks)
    return offsets[offsets < duration_s][:cap]
