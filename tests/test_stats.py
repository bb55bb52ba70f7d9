"""The statistics of verdicts, pinned on synthetic data with known answers (no timings)."""

from __future__ import annotations

import math
from dataclasses import replace

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


# --- a family of rows -----------------------------------------------------------------------------


def test_holm_levels_step_down_and_agree_with_the_adjusted_p_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 ≤ α/4 and 0.01 ≤ α/3 are findings; 0.03 > α/2 stops, and the rest are held at α/2
    assert stats.holm_levels(p, 0.05) == pytest.approx([0.05 / 3, 0.025, 0.025, 0.0125])
    adjusted = stats.holm_adjusted(p)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [q <= 0.05 for q in adjusted] == [pv <= lv for pv, lv in zip(p, stats.holm_levels(p, 0.05), strict=True)]
    assert stats.holm_levels([], 0.05) == [] and stats.holm_levels([0.2], 0.05) == [0.05]


def test_holm_keeps_a_false_row_to_one_aa_family_in_twenty() -> None:
    """64 independent A/A p-values per family: one by one nearly every family has a false row; under Holm about
    1 in 20, and about α false rows per family (what CompareResult.family reports as expected_false)."""
    rng = np.random.default_rng(0)
    families = rng.random((4000, 64))
    alone = float(np.mean((families < 0.05).any(axis=1)))
    found = [sum(p < lv for p, lv in zip(row, stats.holm_levels(row.tolist(), 0.05), strict=True)) for row in families]
    assert alone > 0.9
    assert np.mean([v > 0 for v in found]) == pytest.approx(0.05, abs=0.012)
    assert np.mean(found) == pytest.approx(0.05, abs=0.012)


def test_an_interval_at_another_level_is_one_test_with_its_p_value() -> None:
    rng = np.random.default_rng(4)
    est = stats.ratio_interval(two_level(rng, 5, 40, 0.03, 0.05, 1.08), two_level(rng, 5, 40, 0.03, 0.05), n_boot=500)
    same = stats.at_confidence(est, 0.95)
    assert (same.low, same.high, same.se_log) == (est.low, est.high, est.se_log)
    wide = stats.at_confidence(est, 0.999)
    assert wide.low < est.low < est.high < wide.high and wide.confidence == 0.999
    assert stats.at_confidence(est, 0.999, sigma=0.05).high > wide.high  # a run-to-run spread widens it further
    p = stats.ratio_p_value(est)
    assert p is not None and 0 < p < 1
    for alpha in (0.5, 0.1, 0.05, 0.01, 0.001, 1e-5):
        moved = stats.at_confidence(est, 1 - alpha)
        assert (moved.low > 1 or moved.high < 1) == (p < alpha), alpha
    assert stats.ratio_p_value(est, sigma=0.05) > p
    assert stats.ratio_p_value(replace(est, too_small="n too small")) is None


def test_the_spread_between_runs_is_read_from_many_cells_and_not_moved_by_a_few_changed_ones() -> None:
    rng = np.random.default_rng(5)
    sigma, within = 0.04, 0.01
    ratios = rng.normal(0, math.sqrt(2) * sigma, 200) + rng.normal(0, within, 200)
    ratios[:10] += math.log(1.25)  # ten cells truly slower
    assert stats.spread_between_runs(ratios.tolist(), [within] * 200) == pytest.approx(sigma, rel=0.15)
    quiet = rng.normal(0, within, 50)
    assert stats.spread_between_runs(quiet.tolist(), [within] * 50) < 0.005
    assert stats.spread_between_runs(ratios[:7].tolist(), [within] * 7) is None


def test_z_of_any_level() -> None:
    assert stats.z_two_sided(0.95) == 1.96
    from scipy.stats import norm

    assert stats.z_two_sided(1 - 0.05 / 32) == pytest.approx(norm.ppf(1 - 0.025 / 32), rel=1e-6)


@pytest.mark.slow
def test_bootstrap_rows_held_at_their_holm_levels_keep_the_family_wise_rate() -> None:
    """The t-scaled extension of 95 % bootstrap intervals to Holm's 0.3 % tails is not too narrow: 100 A/A
    families of 16 rows (5 replicates a side), a false row in at most 10 (nominal 5)."""
    rng = np.random.default_rng(1)
    with_false = 0
    for _family in range(100):
        p_values = []
        for i in range(16):
            a, b = two_level(rng, 5, 40, 0.05, 0.1), two_level(rng, 5, 40, 0.05, 0.1)
            p = stats.ratio_p_value(stats.ratio_interval(a, b, "median", n_boot=400, seed=i))
            p_values.append(1.0 if p is None else p)
        levels = stats.holm_levels(p_values, 0.05)
        with_false += any(p < level for p, level in zip(p_values, levels, strict=True))
    assert with_false <= 10
