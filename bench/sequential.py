"""Anytime-valid verdicts for ``bench ab --sequential``: a confidence sequence on the per-pair block log-ratios.

The design adds blocks in pairs, one AB and one BA block in a random order (ABBA or BAAB, a fair coin per
pair): a linear drift inside the pair falls on both sides alike. The unit of the statistics is the pair's
log-ratio of medians, the mean of its two blocks' log(median current / median baseline). Each block is a
fresh session (or process) timed for many calls, so the session-level variance (a session settles into a
fast or slow state) and the call-level one (scatter inside a block, seen through its median) are both inside
every unit; the pairs are independent replicates of one number whose variance is estimated from the pairs
themselves. No model of the two levels is needed, and none is assumed.

After every pair the verdict is read off a **confidence sequence** for the mean log-ratio μ: an interval
that covers μ at *every* look at once with probability ≥ 1 - α (Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2)). A fixed-design
interval checked after every pair would not: stopping at the first look where it excludes 1 turns a 5 % error
into 20–30 % over 20 looks (counted in tests/benchmarks/sequential_ab.py). The boundary is the normal mixture
of Howard et al. made scale-invariant, since the pairs' variance is unknown: the mixture, over the effect in
standard deviations (prior N(0, g)), of the likelihood ratio of the t-statistic (Lai 1976; the Bayes t-test
with the right-Haar prior on σ, an e-process under optional stopping: Pérez-Ortiz, Lardy, de Heide & Grünwald
2024; its confidence sequence: Wang & Ramdas 2023). Its closed form makes the sequence the t-interval
``mean ± c(n)·s/√n`` with a wider, look-dependent ``c(n)`` (:func:`critical_t`). Why this and not an
α-spending group-sequential design: it needs no planned maximum of looks (a ``--max-time`` budget is seconds,
not looks) and no information fraction, which a variance learnt on the way would make random; and "same" is
read off the same interval, as the fixed design reads its verdicts off one interval.

It assumes the pairs' log-ratios are independent and roughly normal; under A/A the random order in each pair
makes them symmetric about 0, where the t-statistic errs on the safe side under heavy tails. Both are
checked by simulation with normal, heavy-tailed (t, 3 df), bimodal (a slow session state) and skewed pairs
(tests/benchmarks/sequential_ab.py --simulate; tests/test_sequential.py).

Verdicts follow bench.stats.decide's rule on this interval (log scale, ``tol`` the latency tolerance):
regression when the point exceeds ``log(1 + tol)`` and the interval lies above 0, improvement symmetrically,
same when the interval lies inside ±log(1 + tol), inconclusive otherwise. A false regression or improvement
needs the sequence to miss μ = 0, and a false "same" needs it to miss a μ outside the band: at most α over
all looks. p50 and p95 each get a sequence at α/2 (Bonferroni: the two latency rows' family).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

PRIOR_G = 16.0  # prior variance of the standardised effect: tight early (few pairs decide a large change)
MIN_PAIRS = 3  # the first pair whose sequence can be finite (c(2) is infinite for every g)
_Z_POWER = NormalDist().inv_cdf(0.8)  # one-sided z of 80 % power, for the MDE
StopReason = Literal["regression", "improvement", "same", "budget", "max_pairs", "failed"]
SeqVerdict = Literal["regression", "improvement", "same", "inconclusive"]


def critical_t(n: int, alpha: float, g: float = PRIOR_G) -> float:
    """``c(n)``: the sequence at look ``n`` (pairs) is ``mean ± c(n)·s/√n``; ``inf`` while it cannot be finite.

    The mixture likelihood ratio of the t-statistic with ν = n - 1 and prior N(0, g) on the standardised
    effect is (1 + ng)^(-1/2) · [(1 + t²/ν) / (1 + t²/(ν(1 + ng)))]^((ν+1)/2); a mean is excluded when it
    reaches 1/α (Ville's inequality: at any look, all looks together). Solving for t² gives c(n)².
    """
    if n < 2:
        return math.inf
    nu = n - 1
    a = (math.sqrt(1.0 + n * g) / alpha) ** (2.0 / (nu + 1))
    room = 1.0 - a / (1.0 + n * g)
    if room <= 0:
        return math.inf
    return math.sqrt(nu * (a - 1.0) / room)


def mixture_ratio(t: float, n: int, g: float = PRIOR_G) -> float:
    """The e-value of "mean 0" at look ``n`` for t-statistic ``t`` (1/it is an anytime-valid p-value)."""
    if n < 2:
        return 1.0
    nu = n - 1
    log_e = -0.5 * math.log1p(n * g) + (nu + 1) / 2.0 * (
        math.log1p(t * t / nu) - math.log1p(t * t / (nu * (1 + n * g)))
    )
    return math.exp(min(log_e, 700.0))


@dataclass(frozen=True)
class Interval:
    """The confidence sequence at one look, on the log-ratio scale: its point (the mean), bounds and spread."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    e_zero: float  # the e-value against "no difference" at this look

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def confidence_sequence(log_ratios: Sequence[float], alpha: float, g: float = PRIOR_G) -> Interval:
    """The sequence's interval for the mean of ``log_ratios`` (one per pair) after ``len(log_ratios)`` pairs."""
    n = len(log_ratios)
    mean = math.fsum(log_ratios) / n if n else 0.0
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in log_ratios) / (n - 1)) if n >= 2 else math.inf
    sd = max(sd, 1e-9)  # identical figures: a point, not a division by zero
    c = critical_t(n, alpha, g)
    half = c * sd / math.sqrt(n) if math.isfinite(c) else math.inf
    t = mean / (sd / math.sqrt(n)) if n >= 2 else 0.0
    return Interval(n, mean, sd, mean - half, mean + half, mixture_ratio(t, n, g))


def verdict(interval: Interval, tolerance: float) -> SeqVerdict:
    """bench.stats.decide's four-way rule on the sequence's interval (log scale; higher = slower)."""
    band = math.log1p(tolerance)
    if not interval.finite:
        return "inconclusive"
    if interval.mean > band and interval.low > 0:
        return "regression"
    if interval.mean < -band and interval.high < 0:
        return "improvement"
    if interval.low >= -band and interval.high <= band:
        return "same"
    return "inconclusive"


def mde(interval: Interval, tolerance: float) -> float | None:
    """The smallest slowdown (fraction) the rule flags with 80 % power at this look's width, as
    bench.stats.minimum_detectable_effect does with a fixed interval; None while the interval is infinite."""
    if not interval.finite:
        return None
    se = interval.sd / math.sqrt(interval.n)
    return math.exp(max(math.log1p(tolerance), interval.half_width) + _Z_POWER * se) - 1.0


def why(name: str, interval: Interval, tolerance: float, alpha: float) -> str:
    """The verdict's reason in the words of bench.stats.decide, naming the sequence and the look."""
    decided = verdict(interval, tolerance)
    where = f"confidence sequence at {(1 - alpha) * 100:.4g}%, valid at every look; look {interval.n}"
    if not interval.finite:
        return f"{name}: {interval.n} pairs: the sequence is still unbounded (need ≥ {MIN_PAIRS} pairs) ({where})"
    ci = f"×{math.exp(interval.mean):.3f} [{math.exp(interval.low):.3f}, {math.exp(interval.high):.3f}]"
    band = f"±{tolerance * 100:g}%"
    text = {
        "regression": f"slower beyond {band}, interval above 1",
        "improvement": f"faster beyond {band}, interval below 1",
        "same": f"interval inside {band}",
        "inconclusive": f"noise hides the answer (MDE +{(mde(interval, tolerance) or 0) * 100:.1f}%)",
    }[decided]
    return f"{name} {ci}: {text} ({where})"


@dataclass(frozen=True)
class Rule:
    """When ``bench ab --sequential`` stops: at a p50 verdict, a p95 regression, or the budget."""

    tolerance: float
    alpha: float = 0.05  # for the family of latency rows; each of p50 and p95 gets alpha / 2
    g: float = PRIOR_G

    @property
    def alpha_row(self) -> float:
        return self.alpha / 2.0

    def stop(self, p50: Interval | None, p95: Interval | None) -> StopReason | None:
        """The reason to stop at this look, or None to add a pair. A p95 regression fails the gate whatever
        the p50 says; otherwise the p50 (the unit the pairs are built on) decides when to stop. None for a
        row: it cannot decide at this look."""
        if p95 is not None and verdict(p95, self.tolerance) == "regression":
            return "regression"
        decided = "inconclusive" if p50 is None else verdict(p50, self.tolerance)
        return None if decided == "inconclusive" else decided


__all__ = [
    "MIN_PAIRS",
    "PRIOR_G",
    "Interval",
    "Rule",
    "SeqVerdict",
    "StopReason",
    "confidence_sequence",
    "critical_t",
    "mde",
    "mixture_ratio",
    "verdict",
    "why",
]
