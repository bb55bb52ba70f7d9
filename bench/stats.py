"""Statistics of latency comparisons that respect how the samples were made.

Calls within one session are not independent draws: a session settles into a fast or a slow state
and stays there for many calls, so the unit that varies is the *replicate* (a fresh session, or a
fresh process), and calls vary inside it. Every interval here is therefore a two-level (hierarchical)
bootstrap: resample replicates with replacement, then calls within each chosen replicate, then take
the statistic of the pooled resample. Samples without replicate indices (results files from before
replicates) are cut into contiguous blocks, which turns the same code into a block bootstrap for
autocorrelated calls.

Quantiles use Hyndman & Fan type 8 (``median_unbiased``), whose estimate does not drift with n, so two
sides with 300 and 3,000 calls from one distribution estimate the same p95 (no n-dependent chunking).

The verdict rule has four outcomes (CLI.md): ``regression`` / ``improvement`` (point beyond the
tolerance *and* the interval wholly on that side of 1), ``same`` (interval inside the tolerance band:
equivalence shown), ``inconclusive`` (anything else). Each comes with the minimum detectable effect
(MDE) at the measured noise, and for an inconclusive one, how many replicates would decide it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

QUANTILE_METHOD: Final = "median_unbiased"  # Hyndman & Fan type 8: approximately median-unbiased for any n
MIN_GROUPS = 3  # fewer replicates (or blocks) than this: no interval, "inconclusive (n too small)"
MIN_SAMPLES = 20  # fewer calls than this on a side: likewise
TAIL_CALLS = 5  # a tail quantile needs this many calls beyond it on each side (p95: 100 calls, p99: 500)
BLOCKS_WITHOUT_REPLICATES = 10  # an old file's calls are cut into this many contiguous blocks
_Z = {0.90: 1.6449, 0.95: 1.9600, 0.99: 2.5758}
PRACTICAL_FACTOR = 10  # an inconclusive row suggests more replicates only up to this many times the ones it had
_Z_POWER = 0.8416  # one-sided z for 80 % power
MAX_CALLS_PER_GROUP = 400  # calls drawn per replicate in a resample, at most ...
DRAWS_PER_RESAMPLE = 4000  # ... and about this many in all (40 replicates: 100 each) ...
MIN_DRAWS_PER_GROUP = 50  # ... but never fewer than this per replicate
_ELEMENT_BUDGET = 2_000_000  # bootstrap draws held at once (x 8 bytes, x ~3 arrays): memory stays < 100 MB


def statistic_of(name: str) -> float:
    """The quantile a statistic name stands for: ``median``/``p50`` → 0.5, ``p95`` → 0.95, ``p99`` → 0.99."""
    if name in ("median", "p50"):
        return 0.5
    if name.startswith("p") and name[1:].isdigit():
        return int(name[1:]) / 100.0
    raise ValueError(f"unknown statistic {name!r} (median, p50, p90, p95, p99)")


def min_samples(q: float) -> int:
    """Calls a side needs for an interval of its q-quantile: ``MIN_SAMPLES``, and ≥ 5 calls beyond a tail quantile."""
    return max(MIN_SAMPLES, math.ceil(TAIL_CALLS / (1.0 - q))) if q > 0.5 else MIN_SAMPLES


def quantile(x: np.ndarray | Sequence[float], q: float) -> float:
    """The q-quantile of ``x`` by the one estimator used everywhere here."""
    return float(np.quantile(np.asarray(x, dtype=np.float64), q, method=QUANTILE_METHOD))


def replicate_groups(samples: Sequence[float], replicate_ids: Sequence[int] | None) -> tuple[list[np.ndarray], str]:
    """Samples split by replicate (fresh session/process), or into contiguous blocks when no ids were recorded.

    Returns the groups and the resampling unit's name, for the "why" of a verdict.
    """
    x = np.asarray(samples, dtype=np.float64)
    if replicate_ids is not None and len(replicate_ids) == x.size and len(set(replicate_ids)) >= 2:
        ids = np.asarray(replicate_ids)
        return [x[ids == r] for r in sorted(set(ids.tolist()))], "replicates"
    blocks = min(BLOCKS_WITHOUT_REPLICATES, max(1, x.size // 10))
    return [b for b in np.array_split(x, blocks) if b.size], "blocks"


def _draw(groups: list[np.ndarray], q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot two-level bootstrap replicates of the pooled q-quantile of ``groups``.

    Level 1 picks replicates with replacement; level 2 draws calls with replacement within each picked
    replicate, the same number from each (the largest replicate's size, at most ``MAX_CALLS_PER_GROUP``):
    replicates weigh equally, and a 60,000-call side costs what a 400-call-per-replicate one does (fewer
    draws than calls only widen the interval).
    """
    sizes = np.array([g.size for g in groups])
    flat = np.concatenate(groups)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n_groups = len(groups)
    draws = int(min(MAX_CALLS_PER_GROUP, max(MIN_DRAWS_PER_GROUP, DRAWS_PER_RESAMPLE // n_groups), sizes.max()))
    chunk = max(1, _ELEMENT_BUDGET // (n_groups * draws))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        picked = rng.integers(0, n_groups, size=(b, n_groups))  # level 1: replicates with replacement
        within = rng.random((b, n_groups, draws))  # level 2: calls within each picked replicate
        index = offsets[picked][..., None] + (within * sizes[picked][..., None]).astype(np.int64)
        out[start : start + b] = np.quantile(flat[index].reshape(b, -1), q, axis=1, method=QUANTILE_METHOD)
    return out


@dataclass(frozen=True)
class RatioEstimate:
    """current/baseline of one statistic, with its hierarchical-bootstrap interval and noise figures."""

    statistic: str
    point: float | None
    low: float | None
    high: float | None
    se_log: float | None  # standard error of log(ratio), from the bootstrap distribution
    unit: str  # what was resampled at the top level: "replicates" or "blocks"
    groups: tuple[int, int]  # (baseline, current) replicates or blocks
    n: tuple[int, int]  # (baseline, current) calls
    too_small: str | None = None  # why no interval could be made
    centre: float | None = None  # the bootstrap distribution's median ratio, around which the interval widens
    confidence: float | None = None  # the level of low/high (at_confidence moves it: a family's adjusted level)

    @property
    def usable(self) -> bool:
        return self.too_small is None and self.point is not None


def ratio_interval(
    current: list[np.ndarray],
    baseline: list[np.ndarray],
    statistic: str = "median",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    unit: str = "replicates",
) -> RatioEstimate:
    """statistic(current)/statistic(baseline) with a two-level percentile-bootstrap interval (log scale)."""
    q = statistic_of(statistic)
    n = (int(sum(g.size for g in baseline)), int(sum(g.size for g in current)))
    groups = (len(baseline), len(current))
    pooled_b = np.concatenate(baseline) if baseline else np.empty(0)
    pooled_c = np.concatenate(current) if current else np.empty(0)
    point = quantile(pooled_c, q) / quantile(pooled_b, q) if min(n) > 0 else None
    need = min_samples(q)
    if min(n) < need or min(groups) < MIN_GROUPS:
        why = (
            f"n too small: {min(n)} calls on a side (need ≥ {need} for {statistic})"
            if min(n) < need
            else f"n too small: {min(groups)} {unit} on a side (need ≥ {MIN_GROUPS})"
        )
        return RatioEstimate(statistic, point, None, None, None, unit, groups, n, too_small=why)
    rng = np.random.default_rng(seed)
    log_ratios = np.log(_draw(current, q, n_boot, rng)) - np.log(_draw(baseline, q, n_boot, rng))
    alpha = (1.0 - confidence) / 2.0
    centre = float(np.median(log_ratios))
    low_log, high_log = np.quantile(log_ratios, [alpha, 1.0 - alpha])
    # With few replicates the bootstrap sees too little of the between-replicate spread (it undercovers:
    # 91 % instead of 95 % at 5 replicates in simulation). Widen by Student's t over the normal quantile and
    # the (R / (R - 1)) variance bias of resampling R groups, with R the smaller side's replicate count.
    widen = small_sample_factor(min(groups), confidence)
    low = math.exp(centre - widen * (centre - low_log))
    high = math.exp(centre + widen * (high_log - centre))
    se = float(np.std(log_ratios, ddof=1)) * widen
    return RatioEstimate(
        statistic, point, low, high, se, unit, groups, n, centre=math.exp(centre), confidence=confidence
    )


def quantile_interval(
    groups: list[np.ndarray], statistic: str = "median", n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float] | None:
    """(point, low, high) of one side's statistic with the same two-level bootstrap; None when n is too small."""
    q = statistic_of(statistic)
    n = sum(g.size for g in groups)
    if n < min_samples(q) or len(groups) < MIN_GROUPS:
        return None
    point = quantile(np.concatenate(groups), q)
    logs = np.log(_draw(groups, q, n_boot, np.random.default_rng(seed)))
    alpha = (1.0 - confidence) / 2.0
    centre = float(np.median(logs))
    low_log, high_log = np.quantile(logs, [alpha, 1.0 - alpha])
    widen = small_sample_factor(len(groups), confidence)
    return point, math.exp(centre - widen * (centre - low_log)), math.exp(centre + widen * (high_log - centre))


def small_sample_factor(replicates: int, confidence: float = 0.95) -> float:
    """t(R-1) / z · sqrt(R / (R - 1)): how much a bootstrap interval over R groups must widen to cover.

    Student's t quantile from its Cornish-Fisher expansion around the normal one (error < 1 % for
    R ≥ 3, checked against scipy in the tests): scipy.stats costs ~0.9 s to import per CLI call.
    """
    from statistics import NormalDist  # ~4 ms of imports, off `bench --help`

    tail = 1.0 - (1.0 - confidence) / 2.0
    z = NormalDist().inv_cdf(tail)
    return student_t_quantile(tail, replicates - 1) / z * math.sqrt(replicates / (replicates - 1))


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher, exact for df=1 and 2)."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) * math.sqrt(2.0 / (4 * p * (1 - p)))
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def with_extra_noise(estimate: RatioEstimate, sigma: float, confidence: float = 0.95) -> RatioEstimate:
    """The estimate with a known extra log-scale spread ``sigma`` per side added (run-to-run, from calibration).

    The ratio of two runs carries it twice (√2·σ); half-widths add in quadrature.
    """
    if not estimate.usable or sigma <= 0:
        return estimate
    assert estimate.point is not None and estimate.low is not None and estimate.high is not None
    z = z_two_sided(confidence)
    extra = z * math.sqrt(2.0) * sigma
    centre = math.log(estimate.point)
    low = centre - math.hypot(centre - math.log(estimate.low), extra)
    high = centre + math.hypot(math.log(estimate.high) - centre, extra)
    se = math.hypot(estimate.se_log or 0.0, math.sqrt(2.0) * sigma)
    return replace(estimate, low=math.exp(low), high=math.exp(high), se_log=se)


@dataclass(frozen=True)
class NoiseComponents:
    """Coefficients of variation at each level: between replicates (of their medians) and within one."""

    cv_between: float | None
    cv_within: float | None
    replicates: int
    calls_per_replicate: float


def noise_components(groups: list[np.ndarray]) -> NoiseComponents:
    """Between-replicate CV of replicate medians and the median within-replicate robust CV (IQR / 1.349)."""
    medians = np.array([np.median(g) for g in groups if g.size])
    within = [(np.subtract(*np.quantile(g, [0.75, 0.25])) / 1.349) / np.median(g) for g in groups if g.size >= 4]
    between = float(np.std(medians, ddof=1) / np.mean(medians)) if medians.size >= 2 else None
    return NoiseComponents(
        cv_between=between,
        cv_within=float(np.median(within)) if within else None,
        replicates=len(groups),
        calls_per_replicate=float(np.mean([g.size for g in groups])) if groups else 0.0,
    )


@dataclass(frozen=True)
class Decision:
    """One of regression / improvement / same / inconclusive, why, the MDE and what would decide it."""

    verdict: str
    why: str
    mde: float | None  # smallest slowdown (fraction, e.g. 0.08 = +8 %) flagged with 80 % power at this noise
    replicates_needed: int | None = None  # for an inconclusive row: replicates per side that would decide it


def minimum_detectable_effect(se_log: float, tolerance: float, confidence: float = 0.95) -> float:
    """The true slowdown that the rule below flags as a regression with 80 % power.

    A regression needs log(point) > log(1 + tolerance) and low > 1, i.e. log(point) > z·se; the point
    itself scatters with sd ≈ se, hence the extra z_power·se.
    """
    z = z_two_sided(confidence)
    return math.exp(max(math.log1p(tolerance), z * se_log) + _Z_POWER * se_log) - 1.0


def decide(estimate: RatioEstimate, tolerance: float, confidence: float = 0.95, name: str = "median") -> Decision:
    """The four-way verdict on a ratio (higher = slower); never a verdict without an interval."""
    if not estimate.usable:
        return Decision("inconclusive", f"inconclusive ({estimate.too_small})", None)
    point, low, high, se = estimate.point, estimate.low, estimate.high, estimate.se_log
    assert point is not None and low is not None and high is not None and se is not None
    upper, lower = 1.0 + tolerance, 1.0 / (1.0 + tolerance)
    mde = minimum_detectable_effect(se, tolerance, confidence)
    ci = f"×{point:.3f} [{low:.3f}, {high:.3f}]"
    band = f"±{tolerance * 100:g}%"
    if point > upper and low > 1.0:
        return Decision("regression", f"{name} {ci}: slower beyond {band}, interval above 1", mde)
    if point < lower and high < 1.0:
        return Decision("improvement", f"{name} {ci}: faster beyond {band}, interval below 1", mde)
    if low >= lower and high <= upper:
        return Decision("same", f"{name} {ci}: interval inside {band}", mde)
    needed = _replicates_to_decide(estimate, tolerance, confidence)
    if needed and needed > PRACTICAL_FACTOR * min(estimate.groups):
        more = (
            f"; it would take over {PRACTICAL_FACTOR}× the {estimate.unit}: "
            "too noisy here to decide (a quieter machine, or --threads 1)"
        )
    else:
        more = f"; ≈{needed} {estimate.unit} per side would decide it" if needed else ""
    return Decision("inconclusive", f"{name} {ci}: noise hides the answer (MDE +{mde * 100:.1f}%){more}", mde, needed)


def _replicates_to_decide(estimate: RatioEstimate, tolerance: float, confidence: float) -> int | None:
    """Replicates per side that would shrink the interval enough to decide, if the point stayed where it is.

    The interval's half-width scales as 1/sqrt(replicates) when replicates are the unit that varies
    (Kalibera & Jones); more calls per replicate only help the within-replicate part.
    """
    if estimate.se_log is None or estimate.point is None or estimate.se_log <= 0:
        return None
    z = z_two_sided(confidence)
    distance = abs(math.log(estimate.point))
    band = math.log1p(tolerance)
    target = distance / z if distance > band else (band - distance) / z
    if target <= 0:
        return None
    factor = (estimate.se_log / target) ** 2
    return max(MIN_GROUPS, math.ceil(min(estimate.groups) * factor))


def replicates_for_mde(se_log: float, replicates: int, target_mde: float, tolerance: float) -> int | None:
    """Replicates per side at which the MDE reaches ``target_mde`` (None when the tolerance alone exceeds it)."""
    if target_mde <= tolerance:
        return None
    z = 1.96
    # solve max(log(1+tol), z·s) + zp·s = log(1+target) for s, then scale replicates by (se/s)².
    goal = math.log1p(target_mde)
    s = min((goal - math.log1p(tolerance)) / _Z_POWER, goal / (z + _Z_POWER))
    if s <= 0:
        return None
    return max(MIN_GROUPS, math.ceil(replicates * (se_log / s) ** 2))


def balanced_order(blocks: int, seed: int) -> list[tuple[int, int]]:
    """Side order per block, randomised but balanced: as many (0, 1) as (1, 0) blocks, shuffled with ``seed``."""
    orders = [(0, 1) if i % 2 == 0 else (1, 0) for i in range(blocks)]
    np.random.default_rng(seed).shuffle(orders)
    return orders


# --- a family of rows: levels, p-values, the spread between processes --------------------------------

MIN_CELLS_FOR_SPREAD = 8  # fewer cells than this in a comparison: their ratios' spread is not estimated


def z_two_sided(confidence: float) -> float:
    """The normal quantile of a two-sided interval at ``confidence`` (1.96 at 0.95), at any level, a family's
    adjusted one (0.9984) included."""
    if confidence in _Z:
        return _Z[confidence]
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def at_confidence(estimate: RatioEstimate, confidence: float, sigma: float = 0.0) -> RatioEstimate:
    """The estimate at another level, with a per-side run-to-run spread ``sigma`` added (``with_extra_noise``).

    Each side of the bootstrap interval (log scale, around the bootstrap median) is scaled by the ratio of
    Student's t quantiles (R - 1 df, R the smaller side's replicates) at the two levels: the interval already
    widens by that t over the normal quantile, and 2,000 resamples cannot resolve the 0.03 % tails of a
    family-adjusted level directly. At the estimate's own level it is the estimate itself.
    """
    if not estimate.usable or estimate.confidence is None or estimate.confidence == confidence:
        return with_extra_noise(replace(estimate, confidence=confidence), sigma, confidence)
    from scipy.special import stdtrit  # Student's t quantile: the ufunc, 100× quicker than scipy.stats.t.ppf

    assert estimate.low is not None and estimate.high is not None and estimate.point is not None
    df = max(1, min(estimate.groups) - 1)
    scale = float(stdtrit(df, 1 - (1 - confidence) / 2) / stdtrit(df, 1 - (1 - estimate.confidence) / 2))
    centre = math.log(estimate.centre if estimate.centre is not None else estimate.point)
    # (clipped: the 1e-12 tails that a p-value's search visits with 2 replicates would overflow)
    low = math.exp(max(-700.0, centre - scale * (centre - math.log(estimate.low))))
    high = math.exp(min(700.0, centre + scale * (math.log(estimate.high) - centre)))
    se = None
    if estimate.se_log is not None:  # se_log carries the t/z widening of its level: move it with the level
        se = estimate.se_log * scale * z_two_sided(estimate.confidence) / z_two_sided(confidence)
    moved = replace(estimate, low=low, high=high, se_log=se, confidence=confidence)
    return with_extra_noise(moved, sigma, confidence)


def ratio_p_value(estimate: RatioEstimate, sigma: float = 0.0) -> float | None:
    """Two-sided p-value of "no difference" (ratio 1) that agrees with the intervals: the smallest α at which
    ``at_confidence(estimate, 1 - α, sigma)`` excludes 1. None without an interval."""
    if not estimate.usable:
        return None

    def excludes_one(alpha: float) -> bool:
        moved = at_confidence(estimate, 1.0 - alpha, sigma)
        assert moved.low is not None and moved.high is not None
        return moved.low > 1.0 or moved.high < 1.0

    lo, hi = 1e-12, 1.0 - 1e-9  # log-scale bisection on α: excluding 1 is monotone in the level
    if excludes_one(lo):
        return lo
    if not excludes_one(hi):
        return 1.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if excludes_one(mid) else (mid, hi)
    return hi


def holm_levels(p_values: Sequence[float], alpha: float) -> list[float]:
    """Each row's own significance level under Holm's step-down, so that its interval can be shown at it.

    Sorted by p, the k-th row (from 0) is tested at α / (m - k) while every earlier one was rejected; the
    rows from the first that is not all get α / (m - r), r the number rejected, at which none of them excludes
    "no difference" (Bonferroni over the rest: Strassburger & Bretz's compatible intervals).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [alpha] * m
    rejected = 0
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        levels[i] = alpha / (m - rank)
        rejected += 1
    for i in order[rejected:]:
        levels[i] = alpha / (m - rejected)
    return levels


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values: a row is a finding of the family at α exactly when its adjusted p ≤ α."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def spread_between_runs(log_ratios: Sequence[float], sd_within: Sequence[float]) -> float | None:
    """Per-side log-scale σ of what differs between processes, seen in many cells' ratios of one comparison.

    In a cross-run comparison each cell's ratio scatters by its own sampling noise (``sd_within``, from its
    bootstrap) *and* by what differs between the two processes that measured it, which replicates inside one
    process cannot see. Their robust spread (1.4826 × the median distance from 1: a few truly changed cells do
    not move it) minus the median sampling variance is that second part, twice (one per side). It is taken
    around 1, not around the cells' median: a whole run slower than the other (the machine's state between
    them) is also what separate processes add, as a calibration's run-to-run σ includes it. None with fewer
    than ``MIN_CELLS_FOR_SPREAD`` cells; 0 when the cells agree within their own noise.
    """
    r = np.asarray(log_ratios, dtype=np.float64)
    if r.size < MIN_CELLS_FOR_SPREAD:
        return None
    mad = 1.4826 * float(np.median(np.abs(r)))
    within = float(np.median(np.square(np.asarray(sd_within, dtype=np.float64))))
    return math.sqrt(max(0.0, mad**2 - within) / 2.0)


__all__ = [
    "QUANTILE_METHOD",
    "Decision",
    "NoiseComponents",
    "RatioEstimate",
    "at_confidence",
    "balanced_order",
    "decide",
    "holm_adjusted",
    "holm_levels",
    "min_samples",
    "minimum_detectable_effect",
    "noise_components",
    "quantile",
    "quantile_interval",
    "ratio_interval",
    "ratio_p_value",
    "replicate_groups",
    "replicates_for_mde",
    "small_sample_factor",
    "spread_between_runs",
    "statistic_of",
    "student_t_quantile",
    "with_extra_noise",
    "z_two_sided",
]
