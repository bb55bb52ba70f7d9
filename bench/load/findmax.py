"""``bench load --find-max``: the highest open-loop rate that meets a p99 SLO with no errors, as a bracket.

One step rule (:class:`StepRule`) serves ``bench load --find-max`` and ``bench matrix --with-service``, so one
service gets one answer either way. A step lasts until it holds enough answers for the quantile it judges:
≥ 5 beyond p99 (500 answers, as ``bench compare`` requires of a tail quantile) after its warm-up (the first
``WARMUP_FRACTION`` of answers, by send order, not judged), so its duration follows from the rate. The verdict,
the step's recorded p50/p99 and the plot all use that same steady-state figure, with a block-bootstrap
interval on the p99 (bench.stats). Before the search a closed loop at CAPACITY_CONCURRENCY in flight measures
what the service sustains: the search starts at the 1-2-5 step below half of it (unless a rate is given), and
afterwards it checks the answer (Little's law). The search doubles the rate while steps pass, then bisects; a
failing step is re-tested before it counts, a queue that grows through a step fails it, and the search is
bounded by a probe count, the longest step, the generator's own ceiling and an optional deadline (``budget
reached``).
The answer is the bracket [highest passing rate, lowest failing rate] with the p99 interval at each edge.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import numpy as np

from bench import stats
from bench.errors import InputError
from bench.load.engine import generator_ceiling, run_load
from bench.load.spec import LoadSpec, check_target
from bench.load.verdicts import CEILING_WARN_FRACTION
from bench.noise import NoiseProbe, combine_noise
from bench.results import LoadResult, MaxRate, MaxRateEdge, MaxRateStep, Noise, StepRuleRecord

DEFAULT_SLO_P99_MS = 50.0  # bench load --p99-slo and bench matrix --service-slo
JUDGED = "p99"  # the quantile a step is judged on (the SLO is a p99 SLO)
WARMUP_FRACTION = 0.2  # the first fifth of a step's answers (by send order) is warm-up: not judged, not plotted
MIN_STEP_S = 5.0  # a step lasts at least this long, however fast the rate fills it (a steady state)
MAX_STEP_S = 600.0  # a rate whose step would last longer is below what the search goes to ("min_rate")
MAX_STEPS = 10  # probes, retests included
TOLERANCE = 0.1  # the search stops when the bracket is this narrow (relative to its lower edge)
CAPACITY_CONCURRENCY = 4  # the closed loop that sets the start and checks the answer: enough to keep a batcher busy
SEQUENTIAL_PROBE_REQUESTS = 10  # one request at a time, when even the closed loop's fastest answer missed the SLO
BACKLOG_GROWTH = 2.0  # last third's median over the first third's: a queue that grows through the step

Limit = Literal["slo", "max_steps", "min_rate", "max_rate", "generator", "budget", "service_time"]


@dataclass(frozen=True)
class StepRule:
    """How find-max steps a service: the same for ``bench load --find-max`` and ``bench matrix --with-service``.

    ``requests``: requests per step; None (the rule) sends enough for ``answers_needed`` judged answers after
    the warm-up. Fewer is for tests only: a step with fewer judged answers than p99 needs cannot pass.
    """

    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    min_step_s: float = MIN_STEP_S
    max_steps: int = MAX_STEPS
    tolerance: float = TOLERANCE
    requests: int | None = None

    def __post_init__(self) -> None:
        if self.slo_p99_ms <= 0:
            raise InputError(f"--p99-slo must be > 0 ms, got {self.slo_p99_ms}")
        if self.min_step_s <= 0:
            raise InputError(f"--duration (the shortest find-max step) must be > 0 s, got {self.min_step_s}")
        if self.max_steps < 1:
            raise InputError(f"--max-steps must be ≥ 1, got {self.max_steps}")

    @property
    def answers_needed(self) -> int:
        """Judged answers a step needs: ≥ 5 beyond the quantile (p99: 500), as compare requires."""
        return stats.min_samples(stats.statistic_of(JUDGED))

    @property
    def step_requests(self) -> int:
        return self.requests or math.ceil(self.answers_needed / (1.0 - WARMUP_FRACTION))

    def step_seconds(self, rate: float) -> float:
        """How long a step at ``rate`` runs: at least ``min_step_s``, and long enough for ``step_requests``."""
        return max(self.min_step_s, self.step_requests / rate)

    @property
    def min_rate(self) -> float:
        """The lowest rate worth a step: below it a step would last more than MAX_STEP_S."""
        return self.step_requests / MAX_STEP_S

    def record(self) -> StepRuleRecord:
        return {
            "judged": JUDGED,
            "answers_needed": self.answers_needed,
            "warmup_fraction": WARMUP_FRACTION,
            "step_requests": self.step_requests,
            "min_step_s": self.min_step_s,
            "max_steps": self.max_steps,
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True)
class StepVerdict:
    """A step's verdict and the steady-state figures it was judged on (the same ones recorded and plotted)."""

    passed: bool
    why: str
    answers: int  # judged answers (after the warm-up)
    p50_ms: float | None
    p99_ms: float | None
    p99_ci_ms: list[float] | None  # 95 % block-bootstrap interval of the p99


def steady_figures(samples_ms: Sequence[float]) -> tuple[np.ndarray, float | None, float | None, list[float] | None]:
    """(judged answers, p50, p99, p99 interval) of one step: answers after the warm-up, by send order."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    steady = samples[int(samples.size * WARMUP_FRACTION) :]
    if steady.size == 0:
        return steady, None, None, None
    p50, p99 = stats.quantile(steady, 0.5), stats.quantile(steady, stats.statistic_of(JUDGED))
    groups, _unit = stats.replicate_groups(steady.tolist(), None)  # contiguous blocks: answers queue together
    interval = stats.quantile_interval(groups, JUDGED)
    ci = None if interval is None else [round(interval[1], 3), round(interval[2], 3)]
    return steady, round(p50, 3), round(p99, 3), ci


def judge_step(result: LoadResult, rule: StepRule) -> StepVerdict:
    """A step passes when every request succeeded, it holds ``rule.answers_needed`` judged answers, their p99
    ≤ SLO, no backlog built up, and the generator sent all it scheduled.

    A late generator needs no check of its own: latency counts from the scheduled time, so its lag is already in
    p99 (a step can only be judged too slow, never too fast).
    """
    slo = rule.slo_p99_ms
    steady, p50, p99, ci = steady_figures(result.samples_ms)

    def verdict(passed: bool, why: str) -> StepVerdict:
        return StepVerdict(passed, why, int(steady.size), p50, p99, ci)

    errors = sum(result.errors.values())
    if result.requests == 0 or p99 is None:
        return verdict(False, "no successful responses")
    if errors:
        return verdict(False, f"{errors} errors ({', '.join(f'{k}: {v}' for k, v in result.errors.items())})")
    if result.config.get("unsent"):
        return verdict(False, f"the generator could not send {result.config['unsent']} scheduled requests")
    interval = f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
    if steady.size < rule.answers_needed:
        return verdict(
            False,
            f"{steady.size} answers judged, fewer than the {rule.answers_needed} a {JUDGED} needs (≥ 5 beyond it)",
        )
    if p99 > slo:
        return verdict(False, f"steady-state p99 {p99:.1f}{interval} ms > SLO {slo:g} ms")
    thirds = np.array_split(steady, 3)
    if min(t.size for t in thirds) >= 10:
        first, last = float(np.median(thirds[0])), float(np.median(thirds[-1]))
        if last > BACKLOG_GROWTH * first and last - first > 0.25 * slo:
            return verdict(False, f"backlog growing: median {first:.1f} → {last:.1f} ms through the step")
    close = " (its interval reaches past the SLO: a close call)" if ci and ci[1] > slo else ""
    return verdict(True, f"steady-state p99 {p99:.1f}{interval} ms ≤ {slo:g} ms{close}, no errors, no backlog")


def find_max_rate(
    run_step: Callable[[float], tuple[LoadResult, Noise | None]],
    rule: StepRule,
    start_rate: float = 10.0,
    max_rate: float | None = None,
    deadline: float | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[MaxRate, LoadResult | None]:
    """Double the rate while steps pass, then bisect between the highest pass and the lowest failure.

    ``run_step(rate)`` runs one step of ``rule.step_seconds(rate)`` and returns it with the noise it was
    measured in. A failing step is run again before it counts (a transient hiccup at a low rate must not cap
    the answer): it fails only when the retest fails too; a fail then pass is recorded as ``flaky``. Bounded by
    ``rule.max_steps`` probes (retests included), ``max_rate`` (e.g. the generator's ceiling), ``rule.min_rate``,
    ``rule.tolerance`` on the final bracket and ``deadline`` (time.monotonic(); a step that would end past it
    is not started: "budget reached"). Returns (the MaxRate summary, the best passing step or the first one).
    """
    if start_rate <= 0:
        raise InputError(f"the starting rate must be > 0, got {start_rate}")
    lo: float | None = None
    hi: float | None = None
    edges: dict[float, MaxRateEdge] = {}
    best: LoadResult | None = None
    first: LoadResult | None = None
    steps: list[MaxRateStep] = []
    noises: list[dict[str, Any]] = []
    limited_by: Limit = "max_steps"
    reason: str | None = None
    rate = start_rate if max_rate is None else min(start_rate, max_rate)

    def out_of_time(rate: float) -> bool:
        return deadline is not None and time.monotonic() + rule.step_seconds(rate) > deadline

    def probe(rate: float, retest: bool) -> tuple[bool, LoadResult]:
        result, noise = run_step(rate)
        verdict = judge_step(result, rule)
        step: MaxRateStep = {
            "rate": round(rate, 3),
            "achieved_rate": result.achieved_rate,
            "duration_s": result.duration_s,
            "requests": result.requests,
            "ok": result.ok,
            "errors": result.errors,
            "answers_judged": verdict.answers,
            "p50_ms": verdict.p50_ms,
            "p99_ms": verdict.p99_ms,
            "p99_ci_ms": verdict.p99_ci_ms,
            "passed": verdict.passed,
            "retest": retest,
            "why": verdict.why,
        }
        if noise is not None:
            step["noise"] = noise
            noises.append(cast(dict[str, Any], noise))
        steps.append(step)
        # the edge at this rate is its last try: a retest that passed (flaky) or failed again decides it
        edge: MaxRateEdge = {"rate": round(rate, 3), "p99_ms": verdict.p99_ms, "p99_ci_ms": verdict.p99_ci_ms}
        if noise is not None:
            edge["noise"] = noise
        edges[edge["rate"]] = edge
        if log is not None:
            flag = " (retest)" if retest else ""
            log(f"find-max: {rate:g}/s{flag} → {'pass' if verdict.passed else 'fail'}: {verdict.why}")
        return verdict.passed, result

    while len(steps) < rule.max_steps:
        if rate < rule.min_rate:
            limited_by, reason = "min_rate", f"a step at {rate:g}/s would last over {MAX_STEP_S:g} s"
            break
        if out_of_time(rate):
            limited_by = "budget"
            reason = f"budget reached: a {rule.step_seconds(rate):.0f} s step at {rate:g}/s would end past it"
            break
        passed, result = probe(rate, retest=False)
        first = first or result
        if not passed and len(steps) < rule.max_steps and not out_of_time(rate):
            passed, again = probe(rate, retest=True)
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
        else:
            if (hi - lo) / lo <= rule.tolerance:
                limited_by = "slo"
                break
            rate = (lo + hi) / 2
    summary: MaxRate = {
        "slo_p99_ms": rule.slo_p99_ms,
        "rate_rps": None if lo is None else round(lo, 3),
        "bracket": [None if lo is None else round(lo, 3), None if hi is None else round(hi, 3)],
        "highest_pass": None if lo is None else edges[round(lo, 3)],
        "lowest_fail": None if hi is None else edges[round(hi, 3)],
        "probes": len(steps),
        "limited_by": limited_by,
        "rule": rule.record(),
        "start_rate": round(start_rate, 3),
        "steps": steps,
    }
    combined = combine_noise(noises)
    if combined is not None:
        summary["noise"] = cast(Noise, combined)
    if reason is not None:
        summary["reason"] = reason
    elif lo is None:
        summary["reason"] = "no step met the SLO with no errors"
    return summary, best or first


def littles_law_check(summary: MaxRate, capacity: LoadResult | None) -> str | None:
    """A warning when the open-loop answer exceeds what a closed loop sustained (Little's law: X = N / W)."""
    if capacity is None or not capacity.throughput_rps:
        return None
    summary["closed_loop_capacity_rps"] = capacity.throughput_rps
    if capacity.concurrency is not None:  # always, for the closed-loop run this is given (schema: an integer)
        summary["closed_loop_concurrency"] = capacity.concurrency
    mean = capacity.latency_ms.get("mean")
    if mean:
        summary["littles_law_rps"] = round((capacity.concurrency or 1) / (mean / 1000.0), 3)
    rate = summary.get("rate_rps")
    if rate is not None and rate > 1.1 * capacity.throughput_rps:
        return (
            f"find-max {rate:g}/s exceeds the closed-loop capacity {capacity.throughput_rps:g}/s at "
            f"{capacity.concurrency} in flight: the open-loop steps may have been too short to build a queue"
        )
    return None


def server_pids(base: str) -> list[int]:
    """The processes listening on ``base``'s port on this machine (the served model: its CPU time is not
    noise), or [] where the system does not say."""
    import psutil

    port = urlsplit(base).port or (443 if base.startswith("https") else 80)
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []
    return sorted(
        {c.pid for c in connections if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}
    )


def start_from_capacity(capacity: LoadResult | None, rule: StepRule) -> float:
    """The first rate tried when none is given: the 1-2-5 step at or below half of what the closed loop
    sustained (20/s when it sustained nothing), never below ``rule.min_rate``. A fixed grid: two runs whose
    capacity reads 452 and 481/s both start at 200/s, so both bisect through the same rates."""
    sustained = capacity.throughput_rps if capacity is not None and capacity.throughput_rps else 40.0
    half = sustained / 2
    decade = 10.0 ** math.floor(math.log10(half))
    step = max(m for m in (1, 2, 5) if m * decade <= half * (1 + 1e-9)) * decade
    return max(rule.min_rate, step)


def run_find_max(
    spec: LoadSpec,
    rule: StepRule | None = None,
    start_rate: float | None = None,
    log: Callable[[str], None] | None = None,
    ceiling: float | None = None,
    deadline: float | None = None,
    pids: Sequence[int] | None = None,
    threads: int | None = None,
) -> LoadResult:
    """``bench load --find-max``: the generator's ceiling once, the closed-loop capacity, then rate steps.

    Each step lasts ``rule.step_seconds(rate)``. ``start_rate`` None starts at half the closed-loop capacity
    (:func:`start_from_capacity`). A ``ceiling`` measured already (req/s) is used instead of measuring it again.
    ``pids``: the served model's processes (default: whoever listens on the URL's port), whose CPU time is not
    noise; ``threads``: its intra-op threads, for the contention check (None: unknown). Returns the best passing
    step's LoadResult (or the first step's when none passed) with ``max_rate`` set.
    """
    rule = rule or StepRule()
    if spec.mode != "open":
        raise InputError("--find-max steps an open-loop rate; do not combine it with --concurrency")
    base = check_target(spec.url, spec.allow_remote)
    if ceiling is None and spec.measure_ceiling:
        ceiling, why = generator_ceiling(base, spec.ceiling_s, timeout_s=spec.timeout_s)
        if log is not None:
            log(f"find-max: generator ceiling {ceiling:g}/s" if ceiling else f"warning: {why}")
    step_spec = replace(spec, measure_ceiling=False)
    own = list(pids) if pids is not None else server_pids(base)
    capacity = run_load(replace(step_spec, rate=None, concurrency=CAPACITY_CONCURRENCY, duration_s=rule.min_step_s))
    if log is not None:
        log(f"find-max: a closed loop at {CAPACITY_CONCURRENCY} in flight sustained {capacity.throughput_rps:g}/s")

    def step(rate: float) -> tuple[LoadResult, Noise | None]:
        probe = NoiseProbe(threads, own_pids=own)
        with probe:
            result = run_load(replace(step_spec, rate=rate, duration_s=rule.step_seconds(rate)))
        return result, cast(Noise, probe.figures())

    cap = CEILING_WARN_FRACTION * ceiling if ceiling else None
    fastest = _fastest_alone(step_spec, capacity, rule)
    if fastest is not None:
        summary, best = _nothing_meets(rule, fastest), capacity
    else:
        start = start_rate if start_rate is not None else start_from_capacity(capacity, rule)
        summary, found = find_max_rate(step, rule, start_rate=start, max_rate=cap, deadline=deadline, log=log)
        best = found or capacity
    summary["start_from"] = "--rate" if start_rate is not None else "closed-loop capacity"
    if summary["limited_by"] == "max_rate":
        summary["limited_by"] = "generator"
        summary["reason"] = (
            f"stopped at {CEILING_WARN_FRACTION:.0%} of the generator's ceiling ({ceiling:g}/s); "
            "the service may sustain more"
        )
    warning = littles_law_check(summary, capacity)
    if warning:
        summary["warning"] = warning
        if log is not None:
            log(f"warning: {warning}")
    best.max_rate = summary
    best.generator_ceiling_rps = ceiling
    return best


def _fastest_alone(spec: LoadSpec, capacity: LoadResult, rule: StepRule) -> float | None:
    """The fastest answer of requests sent one at a time, when it misses the SLO (then no rate can meet it), or
    None. Asked only when even the closed loop's fastest answer missed the SLO, which is rare and cheap."""
    fastest = min(capacity.samples_ms, default=None)
    if fastest is None or fastest <= rule.slo_p99_ms:  # no answer at all: the steps will say why
        return None
    alone = run_load(
        replace(spec, rate=None, concurrency=1, duration_s=rule.min_step_s, max_requests=SEQUENTIAL_PROBE_REQUESTS)
    )
    fastest = min(alone.samples_ms, default=None)
    return fastest if fastest is not None and fastest > rule.slo_p99_ms and not alone.errors else None


def _nothing_meets(rule: StepRule, fastest_ms: float) -> MaxRate:
    """The answer when even one request at a time misses the SLO: no rate meets it, so no step is run."""
    return {
        "slo_p99_ms": rule.slo_p99_ms,
        "rate_rps": None,
        "bracket": [None, None],
        "highest_pass": None,
        "lowest_fail": None,
        "probes": 0,
        "limited_by": "service_time",
        "rule": rule.record(),
        "steps": [],
        "reason": (
            f"requests sent one at a time took at least {fastest_ms:.1f} ms, over the {rule.slo_p99_ms:g} ms SLO: "
            "no rate can meet it"
        ),
    }


__all__ = [
    "CAPACITY_CONCURRENCY",
    "DEFAULT_SLO_P99_MS",
    "MAX_STEPS",
    "MIN_STEP_S",
    "StepRule",
    "StepVerdict",
    "find_max_rate",
    "judge_step",
    "littles_law_check",
    "run_find_max",
    "server_pids",
    "start_from_capacity",
    "steady_figures",
]
