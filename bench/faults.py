"""Test-only fault injection, driven by the ``BENCH_FAULTS`` environment variable (JSON).

Never set in production. Tests and the A/B benchmarks use it to make a model slower, a cell crash,
or the service slow, so the gate and the load generator can be shown to catch real problems:

    BENCH_FAULTS='{"slowdown": {"factor": 0.25, "match": "candidate/"}}'   # +25% per inference call
    BENCH_FAULTS='{"crash": {"variant": "int8", "provider": "cpu"}}'        # the cell's process aborts
    BENCH_FAULTS='{"service_delay_ms": 50}'                                 # each service inference +50 ms
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

ENV_VAR = "BENCH_FAULTS"


@lru_cache(maxsize=8)
def _parse(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{ENV_VAR} must be a JSON object")
    return data


def active() -> dict[str, Any]:
    """The faults configured now (empty when ``BENCH_FAULTS`` is unset)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    return _parse(raw) if raw else {}


def slow_down(call: Callable[[], Any], model_path: str) -> Callable[[], Any]:
    """Wrap an inference call so it takes ``1 + factor`` times as long (busy-wait, sub-ms exact)."""
    spec = active().get("slowdown")
    if not spec or spec.get("match", "") not in str(model_path):
        return call
    factor = float(spec["factor"])
    clock = time.perf_counter_ns

    def slowed() -> Any:
        t0 = clock()
        out = call()
        until = clock() + int((clock() - t0) * factor)
        while clock() < until:
            pass
        return out

    return slowed


def maybe_crash(variant: str, provider: str) -> None:
    """Abort the process (like a segfault in a provider) when a crash is configured for this cell."""
    spec = active().get("crash")
    if spec and spec.get("variant", variant) == variant and spec.get("provider", provider) == provider:
        os.abort()


def service_delay_s() -> float:
    """Extra seconds each service inference sleeps (a slow server on purpose)."""
    return float(active().get("service_delay_ms", 0)) / 1000.0
