"""``bench load --find-max``: the highest open-loop rate that meets a p99 SLO with no errors.

Doubles the rate while steps pass, then bisects; bounded by a probe count, a minimum rate and the
generator's own ceiling, so the search always ends and never reports the generator's limit as the service's.
To reproduce: each step runs long enough for a steady state (a minimum request count, warm-up answers
not judged), a failing step is re-tested before it counts, a queue that grows through a step fails it,
and the answer is a bracket [highest pass, lowest fail] with the number of probes, checked against
the closed-loop capacity (Little's law).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np

from bench.errors import InputError
from bench.load.engine import generator_ceiling, run_load
from bench.load.spec import LoadSpec, check_target
from bench.load.verdicts import CEILING_WARN_FRACTION
from bench.results import LoadResult, MaxRate, MaxRateStep

CAPACITY_CONCURRENCY = 4  # the closed loop that checks the answer: enough in flight to keep a batcher busy
MIN_STEP_REQUESTS = 300  # a step lasts until this many requests were scheduled (at most MAX_STEP_S)
MAX_STEP_S = 60.0
WARMUP_FRACTION = 0.2  # the first fifth of a step's answers (by send order) is warm-up: not judged
BACKLOG_GROWTH = 2.0  # last third's median over the first third's: a queue that grows through the step


def step_seconds(rate: float, minimum_s: float, min_requests: int = MIN_STEP_REQUESTS) -> float:
    """How long a step at ``rate`` runs: at least ``minimum_s`` and long enough for ``min_requests``."""
    return min(MAX_STEP_S, max(minimum_s, min_requests / rate))


def judge_step(result: LoadResult, slo_p99_ms: float) -> tuple[bool, str]:
    """A step passes when every request succeeded, the steady-state p99 ≤ SLO, no backlog built up, and the
    generator sent all it scheduled.

    Steady state: the first ``WARMUP_FRACTION`` of answers (send order) is left out of the p99. A late
    generator needs no check of its own: latency counts from the scheduled time, so its lag is already in
    p99 (a step can only be judged too slow, never too fast).
    """
    errors = sum(result.errors.values())
    samples = np.asarray(result.samples_ms, dtype=np.float64)
    if result.requests == 0 or samples.size == 0:
        return False, "no successful responses"
    if errors:
        return False, f"{errors} errors ({', '.join(f'{k}: {v}' for k, v in result.errors.items())})"
    if result.config.get("unsent"):
        return False, f"the generator could not send {result.config['unsent']} scheduled requests"
    steady = samples[int(samples.size * WARMUP_FRACTION) :]
    p99 = float(np.percentile(steady, 99))
    if p99 > slo_p99_ms:
        return False, f"steady-state p99 {p99:.1f} ms > SLO {slo_p99_ms:g} ms"
    thirds = np.array_split(steady, 3)
    if min(t.size for t in thirds) >= 10:
        first, last = float(np.median(thirds[0])), float(np.median(thirds[-1]))
        if last > BACKLOG_GROWTH * first and last - first > 0.25 * slo_p99_ms:
            return False, f"backlog growing: median {first:.1f} → {last:.1f} ms through the step"
    return True, f"steady-state p99 {p99:.1f} ms ≤ {slo_p99_ms:g} ms, no errors, no backlog"


def find_max_rate(
    run_step: Callable[[float], LoadResult],
    slo_p99_ms: float,
    start_rate: float = 10.0,
    max_steps: int = 10,
    max_rate: float | None = None,
    tolerance: float = 0.1,
    min_rate: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> tuple[MaxRate, LoadResult | None]:
    """Double the rate while steps pass, then bisect between the highest pass and the lowest failure.

    A failing step is run again before it counts (a transient hiccup at a low rate must not cap the
    answer): it fails only when the retest fails too; a pass then fail is recorded as ``flaky``. Bounded
    by ``max_steps`` probes (retests included), ``max_rate`` (e.g. the generator's ceiling) and a relative
    ``tolerance`` on the final bracket. Returns ({slo_p99_ms, rate_rps, bracket, probes, limited_by,
    steps}, best step).
    """
    if slo_p99_ms <= 0:
        raise InputError(f"--p99-slo must be > 0 ms, got {slo_p99_ms}")
    if start_rate <= 0:
        raise InputError(f"the starting rate must be > 0, got {start_rate}")
    lo: float | None = None
    hi: float | None = None
    best: LoadResult | None = None
    first: LoadResult | None = None
    steps: list[MaxRateStep] = []
    limited_by: Literal["slo", "max_steps", "min_rate", "max_rate"] = "max_steps"
    rate = start_rate if max_rate is None else min(start_rate, max_rate)

    def probe(rate: float, retest: bool) -> tuple[bool, str, LoadResult]:
        result = run_step(rate)
        passed, why = judge_step(result, slo_p99_ms)
        steps.append(
            {
                "rate": round(rate, 3),
                "achieved_rate": result.achieved_rate,
                "requests": result.requests,
                "ok": result.ok,
                "errors": result.errors,
                "p50_ms": result.latency_ms.get("p50"),
                "p99_ms": result.latency_ms.get("p99"),
                "passed": passed,
                "retest": retest,
                "why": why,
            }
        )
        if log is not None:
            log(f"find-max: {rate:g}/s{' (retest)' if retest else ''} → {'pass' if passed else 'fail'}: {why}")
        return passed, why, result

    while len(steps) < max_steps:
        passed, _why, result = probe(rate, retest=False)
        first = first or result
        if not passed and len(steps) < max_steps:
            passed, _why, again = probe(rate, retest=True)
            if passed:
                steps[-1]["flaky"] = True
                result = again
        if passed and (lo is None or rate > lo):
            lo, best = rate, result
        if not passed and (hi is None or rate < hi):
            hi = rate
        if hi is None:  # still doubling
            if max_rate is not None and rate >= max_rate:
                limited_by = "max_rate"
                break
            rate = rate * 2 if max_rate is None else min(rate * 2, max_rate)
        elif lo is None:  # failing from the start: halve
            rate = hi / 2
            if rate < min_rate:
                limited_by = "min_rate"
                break
        else:
            if (hi - lo) / lo <= tolerance:
                limited_by = "slo"
                break
            rate = (lo + hi) / 2
    summary: MaxRate = {
        "slo_p99_ms": slo_p99_ms,
        "rate_rps": None if lo is None else round(lo, 3),
        "bracket": [None if lo is None else round(lo, 3), None if hi is None else round(hi, 3)],
        "probes": len(steps),
        "limited_by": limited_by,
        "steps": steps,
    }
    if lo is None:
        summary["reason"] = "no step met the SLO with no errors"
    return summary, best or first


def littles_law_check(summary: MaxRate, capacity: LoadResult | None) -> str | None:
    """A warning when the open-loop answer exceeds what a closed loop sustained (Little's law: X = N / W)."""
    rate = summary.get("rate_rps")
    if rate is None or capacity is None or not capacity.throughput_rps:
        return None
    summary["closed_loop_capacity_rps"] = capacity.throughput_rps
    if capacity.concurrency is not None:  # always, for the closed-loop run this is given (schema: an integer)
        summary["closed_loop_concurrency"] = capacity.concurrency
    mean = capacity.latency_ms.get("mean")
    if mean:
        summary["littles_law_rps"] = round((capacity.concurrency or 1) / (mean / 1000.0), 3)
    if rate > 1.1 * capacity.throughput_rps:
        return (
            f"find-max {rate:g}/s exceeds the closed-loop capacity {capacity.throughput_rps:g}/s at "
            f"{capacity.concurrency} in flight: the open-loop steps may have been too short to build a queue"
        )
    return None


def run_find_max(
    spec: LoadSpec,
    slo_p99_ms: float,
    step_duration_s: float = 5.0,
    max_steps: int = 10,
    log: Callable[[str], None] | None = None,
    ceiling: float | None = None,
    min_step_requests: int = MIN_STEP_REQUESTS,
) -> LoadResult:
    """``bench load --find-max``: the generator's ceiling once, then rate steps (each a bounded open-loop run).

    Each step lasts ``step_duration_s`` or long enough for MIN_STEP_REQUESTS requests, whichever is longer;
    after the search a closed loop at CAPACITY_CONCURRENCY in flight checks the answer (Little's law).
    Returns the best passing step's LoadResult (or the first step's when none passed) with ``max_rate`` set.
    A ``ceiling`` measured already (req/s) is used instead of measuring it again.
    """
    if spec.mode != "open":
        raise InputError("--find-max steps an open-loop rate; do not combine it with --concurrency")
    base = check_target(spec.url, spec.allow_remote)
    if ceiling is None and spec.measure_ceiling:
        ceiling, why = generator_ceiling(base, spec.ceiling_s)
        if log is not None:
            log(f"find-max: generator ceiling {ceiling:g}/s" if ceiling else f"warning: {why}")
    step_spec = replace(spec, measure_ceiling=False)

    def step(rate: float) -> LoadResult:
        return run_load(
            replace(step_spec, rate=rate, duration_s=step_seconds(rate, step_duration_s, min_step_requests))
        )

    cap = CEILING_WARN_FRACTION * ceiling if ceiling else None
    summary, best = find_max_rate(
        step, slo_p99_ms, start_rate=spec.rate or 10.0, max_steps=max_steps, max_rate=cap, log=log
    )
    if summary["limited_by"] == "max_rate":
        summary["limited_by"] = "generator"
        summary["reason"] = (
            f"stopped at {CEILING_WARN_FRACTION:.0%} of the generator's ceiling ({ceiling:g}/s); "
            "the service may sustain more"
        )
    capacity = run_load(replace(step_spec, rate=None, concurrency=CAPACITY_CONCURRENCY, duration_s=step_duration_s))
    warning = littles_law_check(summary, capacity)
    if warning:
        summary["warning"] = warning
        if log is not None:
            log(f"warning: {warning}")
    assert best is not None
    best.max_rate = summary
    best.generator_ceiling_rps = ceiling
    return best
