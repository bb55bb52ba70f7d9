"""The statistics of verdicts, pinned on synthetic data with known answers (no timings)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats


def two_level(
    rng: np.random.Generator, replicates: int, calls: int, sd_between: float, sd_within: float, scale: float = 1.0
) -> list[np.ndarray]:
    """Lognormal latencies: a per-replicate level (session state) times per-call noise."""
    return [scale * np.exp(rng.normal(0, sd_between) + rng.normal(0, sd_within, calls)) for _ in range(replicates)]


def test_hierarchical_interval_covers_the_true_ratio() -> None:
    """95 % intervals on A/A two-level data cover 1 in at least 93 of 100 simulations."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(100):
        a, b = two_level(rng, 8, 40, 0.05, 0.1), two_level(rng, 8, 40, 0.05, 0.1)
        est = stats.ratio_interval(a, b, "median", n_boot=400, seed=i)
        covered += est.low <= 1.0 <= est.high
    assert covered >= 93


def test_interval_that_ignores_replicates_would_be_far_too_narrow() -> None:
    """The reason for two levels: with a 10 % session effect, per-call resampling gives a ±1 % interval."""
    rng = np.random.default_rng(3)
    a, b = two_level(rng, 10, 200, 0.10, 0.05), two_level(rng, 10, 200, 0.10, 0.05)
    hier = stats.ratio_interval(a, b, "median", n_boot=500)
    flat = stats.ratio_interval([np.concatenate(a)] * 3, [np.concatenate(b)] * 3, "median", n_boot=500)
    assert (hier.high - hier.low) > 3 * (flat.high - flat.low)


def test_a_real_slowdown_is_a_regression_and_aa_is_same() -> None:
    rng = np.random.default_rng(11)
    base = two_level(rng, 10, 100, 0.02, 0.05)
    slow = two_level(rng, 10, 100, 0.02, 0.05, scale=1.25)
    same = two_level(rng, 10, 100, 0.02, 0.05)
    assert stats.decide(stats.ratio_interval(slow, base), 0.10).verdict == "regression"
    assert stats.decide(stats.ratio_interval(base, slow), 0.10).verdict == "improvement"
    assert stats.decide(stats.ratio_interval(same, base), 0.10).verdict == "same"


@pytest.mark.slow
def test_tail_quantile_does_not_depend_on_n() -> None:
    """300 vs 3,000 calls from one distribution: at most 1 false verdict in 200 compares of p95."""
    rng = np.random.default_rng(5)
    false = 0
    for i in range(200):
        small = [rng.lognormal(0, 0.3, 30) for _ in range(10)]
        large = [rng.lognormal(0, 0.3, 300) for _ in range(10)]
        verdict = stats.decide(stats.ratio_interval(small, large, "p95", n_boot=300, seed=i), 0.10).verdict
        false += verdict in ("regression", "improvement")
    assert false <= 1


@pytest.mark.parametrize(
    ("point", "low", "high", "expected"),
    [
        (1.30, 1.20, 1.40, "regression"),
        (0.70, 0.60, 0.80, "improvement"),
        (1.01, 0.97, 1.05, "same"),
        (1.30, 0.95, 1.60, "inconclusive"),  # beyond tolerance, but 1 is inside the interval
        (1.05, 1.01, 1.15, "inconclusive"),  # surely slower, but maybe within tolerance
    ],
)
def test_four_verdicts(point: float, low: float, high: float, expected: str) -> None:
    est = stats.RatioEstimate("median", point, low, high, 0.05, "replicates", (10, 10), (500, 500))
    assert stats.decide(est, 0.10).verdict == expected


def test_too_few_replicates_or_calls_is_inconclusive_never_a_verdict() -> None:
    rng = np.random.default_rng(0)
    few_groups = stats.ratio_interval(two_level(rng, 2, 100, 0, 0.1, 2.0), two_level(rng, 2, 100, 0, 0.1))
    few_calls = stats.ratio_interval(two_level(rng, 5, 3, 0, 0.1, 2.0), two_level(rng, 5, 3, 0, 0.1))
    for est in (few_groups, few_calls):
        verdict = stats.decide(est, 0.10)
        assert verdict.verdict == "inconclusive" and "n too small" in verdict.why


def test_mde_is_the_tolerance_when_noise_is_small_and_grows_with_noise() -> None:
    assert stats.minimum_detectable_effect(0.0, 0.10) == pytest.approx(0.10)
    se = 0.10  # z·se = 0.196 > log(1.1): noise decides
    assert stats.minimum_detectable_effect(se, 0.10) == pytest.approx(math.exp(1.96 * se + 0.8416 * se) - 1)


def test_inconclusive_says_how_many_replicates_would_decide() -> None:
    est = stats.RatioEstimate("median", 1.30, 0.95, 1.78, 0.16, "replicates", (5, 5), (500, 500))
    verdict = stats.decide(est, 0.10)
    assert verdict.verdict == "inconclusive" and verdict.replicates_needed is not None
    assert verdict.replicates_needed > 5 and f"≈{verdict.replicates_needed} replicates" in verdict.why


def test_replicates_for_mde_scales_with_the_square_of_the_noise() -> None:
    r1 = stats.replicates_for_mde(0.05, 10, 0.20, 0.05)
    r2 = stats.replicates_for_mde(0.10, 10, 0.20, 0.05)
    assert r1 is not None and r2 is not None and 3.5 <= r2 / r1 <= 4.5
    assert stats.replicates_for_mde(0.05, 10, 0.05, 0.10) is None  # below the tolerance: no amount of data helps


def test_old_files_without_replicates_fall_back_to_blocks() -> None:
    groups, unit = stats.replicate_groups(list(range(1, 301)), None)
    assert unit == "blocks" and len(groups) == 10 and sum(g.size for g in groups) == 300
    groups, unit = stats.replicate_groups([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1])
    assert unit == "replicates" and [g.tolist() for g in groups] == [[1.0, 2.0], [3.0, 4.0]]


def test_balanced_order_is_balanced_and_seeded() -> None:
    order = stats.balanced_order(10, seed=3)
    assert order.count((0, 1)) == order.count((1, 0)) == 5
    assert order == stats.balanced_order(10, seed=3) and order != stats.balanced_order(10, seed=4)


def test_noise_components_separate_the_levels() -> None:
    rng = np.random.default_rng(2)
    comp = stats.noise_components(two_level(rng, 30, 400, 0.10, 0.02))
    assert comp.cv_between == pytest.approx(0.10, rel=0.35) and comp.cv_within == pytest.approx(0.02, rel=0.2)


def test_student_t_quantile_matches_scipy() -> None:
    from scipy.stats import t

    for df in (1, 2, 3, 4, 9, 39, 199):
        for p in (0.95, 0.975, 0.995):
            assert stats.student_t_quantile(p, df) == pytest.approx(t.ppf(p, df), rel=0.01)
