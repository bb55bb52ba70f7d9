"""What one run's numbers mean: latency and send-lag summaries, the memory-leak rule, the ceiling warning.

Pure functions of figures already measured, so the rules can be tested without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.results import LoadLatency, SendLag, ServerMemory

CEILING_WARN_FRACTION = 0.7  # warn when the target rate is above this share of the generator's ceiling
LEAK_FLOOR_MB = 50.0  # leak rule: growth must exceed max(LEAK_FLOOR_MB, LEAK_FRACTION × start) ...
LEAK_FRACTION = 0.10
LEAK_LATE_SHARE = 1 / 3  # ... and the second half of the run must still add this share of that threshold
LEAK_RULE = (
    f"suspected when end − start > max({LEAK_FLOOR_MB:g} MB, {LEAK_FRACTION:.0%} of start) and the second half "
    f"of the run still grew by more than {LEAK_LATE_SHARE:.2g} of that threshold (growth that plateaus after "
    "warm-up is not a leak); RSS and GPU memory are judged alike; a short run only catches fast leaks"
)


def latency_summary(samples_ms: Sequence[float]) -> LoadLatency:
    """{n, p50, p90, p99, p999, max, mean} from exact samples; nulls with a reason when there are none."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {
            "n": 0,
            "p50": None,
            "p90": None,
            "p99": None,
            "p999": None,
            "max": None,
            "mean": None,
            "reason": "no successful (2xx) responses",
        }
    p50, p90, p99, p999 = np.percentile(x, [50, 90, 99, 99.9])
    return {
        "n": int(x.size),
        "p50": _r(p50),
        "p90": _r(p90),
        "p99": _r(p99),
        "p999": _r(p999),
        "max": _r(x.max()),
        "mean": _r(x.mean()),
    }


def lag_summary(lags_ms: Sequence[float]) -> SendLag:
    x = np.asarray(lags_ms, dtype=np.float64)
    if x.size == 0:
        return {"p50": None, "p99": None, "max": None, "reason": "no request was sent"}
    p50, p99 = np.percentile(x, [50, 99])
    return {"p50": _r(p50), "p99": _r(p99), "max": _r(x.max())}


def _r(value: Any, digits: int = 3) -> float:
    return round(float(value), digits)


def leak_verdict(start: float | None, mid: float | None, end: float | None) -> bool | None:
    """LEAK_RULE for one memory series (MB); None when start or end is unknown."""
    if start is None or end is None:
        return None
    threshold = max(LEAK_FLOOR_MB, LEAK_FRACTION * start)
    if end - start <= threshold:
        return False
    if mid is None:
        return True
    return end - mid > LEAK_LATE_SHARE * threshold


def server_verdict(start: dict[str, Any], mid: dict[str, Any], end: dict[str, Any]) -> ServerMemory:
    """The LoadResult ``server`` object from three /health readings (start, middle, end of the run)."""
    rss = [d.get("rss_mb") for d in (start, mid, end)]
    gpu = [d.get("gpu_mb") for d in (start, mid, end)]
    verdicts = [v for v in (leak_verdict(*rss), leak_verdict(*gpu)) if v is not None]
    reasons = sorted({d["reason"] for d in (start, end) if d.get("reason")})
    return {
        "rss_start_mb": rss[0],
        "rss_mid_mb": rss[1],
        "rss_end_mb": rss[2],
        "gpu_start_mb": gpu[0],
        "gpu_mid_mb": gpu[1],
        "gpu_end_mb": gpu[2],
        "leak_suspected": any(verdicts) if verdicts else None,
        "leak_rule": LEAK_RULE,
        "reason": "; ".join(reasons) or None,
    }


def parse_health(data: Any) -> dict[str, Any]:
    """RSS (``process.rss_mb``) and GPU memory (``memory_usage.gpu_memory_used_mb``) from a /health body."""
    if not isinstance(data, dict):
        return {"rss_mb": None, "gpu_mb": None, "reason": "/health did not answer a JSON object"}
    process, memory = data.get("process"), data.get("memory_usage")
    process = process if isinstance(process, dict) else {}
    memory = memory if isinstance(memory, dict) else {}
    rss, gpu = process.get("rss_mb"), memory.get("gpu_memory_used_mb")
    reasons = []
    if rss is None:
        reasons.append("/health has no process.rss_mb")
    if gpu is None:
        reasons.append("/health reports no GPU memory (no GPU, or none visible to the service)")
    return {"rss_mb": _num(rss), "gpu_mb": _num(gpu), "reason": "; ".join(reasons) or None}


def _num(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ceiling_warning(rate: float | None, ceiling: float | None) -> str | None:
    """A warning when an open-loop target rate is above CEILING_WARN_FRACTION of the generator's ceiling."""
    if rate is None or not ceiling or rate <= CEILING_WARN_FRACTION * ceiling:
        return None
    return (
        f"target rate {rate:g}/s is {rate / ceiling:.0%} of the generator's own ceiling ({ceiling:g}/s): "
        "the generator may be the bottleneck; latencies then include its delay (see send_lag_ms)"
    )
