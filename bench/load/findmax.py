"""``bench load --find-max``: the highest open-loop rate that meets a p99 SLO with no errors.

Doubles the rate while steps pass, then bisects; bounded by a step count, a minimum rate and the
generator's own ceiling, so the search always ends and never reports the generator's limit as the service's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.errors import InputError
from bench.load.engine import generator_ceiling, run_load
from bench.load.spec import LoadSpec, check_target
from bench.load.verdicts import CEILING_WARN_FRACTION
from bench.results import LoadResult


def judge_step(result: LoadResult, slo_p99_ms: float) -> tuple[bool, str]:
    """A step passes when every request succeeded, p99 ≤ SLO and the generator sent all it scheduled.

    A late generator needs no check of its own: latency counts from the scheduled time, so its lag
    is already in p99 (a step can only be judged too slow, never too fast).
    """
    errors = sum(result.errors.values())
    p99 = result.latency_ms.get("p99")
    if result.requests == 0 or p99 is None:
        return False, "no successful responses"
    if errors:
        return False, f"{errors} errors ({', '.join(f'{k}: {v}' for k, v in result.errors.items())})"
    if p99 > slo_p99_ms:
        return False, f"p99 {p99:.1f} ms > SLO {slo_p99_ms:g} ms"
    if result.config.get("unsent"):
        return False, f"the generator could not send {result.config['unsent']} scheduled requests"
    return True, f"p99 {p99:.1f} ms ≤ {slo_p99_ms:g} ms, no errors"


def find_max_rate(
    run_step: Callable[[float], LoadResult],
    slo_p99_ms: float,
    start_rate: float = 10.0,
    max_steps: int = 10,
    max_rate: float | None = None,
    tolerance: float = 0.1,
    min_rate: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], LoadResult | None]:
    """Double the rate while steps pass, then bisect between the last pass and the first failure.

    Bounded by ``max_steps`` steps, ``max_rate`` (e.g. the generator's ceiling) and a relative
    ``tolerance`` on the final bracket. Returns ({slo_p99_ms, rate_rps, limited_by, steps}, best step).
    """
    if slo_p99_ms <= 0:
        raise InputError(f"--p99-slo must be > 0 ms, got {slo_p99_ms}")
    if start_rate <= 0:
        raise InputError(f"the starting rate must be > 0, got {start_rate}")
    lo: float | None = None
    hi: float | None = None
    best: LoadResult | None = None
    first: LoadResult | None = None
    steps: list[dict[str, Any]] = []
    limited_by = "max_steps"
    rate = start_rate if max_rate is None else min(start_rate, max_rate)
    while len(steps) < max_steps:
        result = run_step(rate)
        first = first or result
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
                "why": why,
            }
        )
        if log is not None:
            log(f"find-max: {rate:g}/s → {'pass' if passed else 'fail'}: {why}")
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
    summary = {
        "slo_p99_ms": slo_p99_ms,
        "rate_rps": None if lo is None else round(lo, 3),
        "limited_by": limited_by,
        "steps": steps,
    }
    if lo is None:
        summary["reason"] = "no step met the SLO with no errors"
    return summary, best or first


def run_find_max(
    spec: LoadSpec,
    slo_p99_ms: float,
    step_duration_s: float = 5.0,
    max_steps: int = 10,
    log: Callable[[str], None] | None = None,
    ceiling: float | None = None,
) -> LoadResult:
    """``bench load --find-max``: the generator's ceiling once, then rate steps (each a bounded open-loop run).

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
    step_spec = replace(spec, duration_s=step_duration_s, measure_ceiling=False)

    def step(rate: float) -> LoadResult:
        return run_load(replace(step_spec, rate=rate))

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
    assert best is not None
    best.max_rate = summary
    best.generator_ceiling_rps = ceiling
    return best
