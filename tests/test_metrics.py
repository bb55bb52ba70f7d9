"""Metric functions against small cases whose expected values are worked out by hand below."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.metrics import (
    CI_KEYS,
    _Ranked,
    accuracy_drop_interval,
    agreement,
    binary_metrics,
    bootstrap_intervals,
    detector_metrics,
    effective_n,
    equal_error_rate,
    expected_calibration_error,
    group_codes,
    operating_point,
    paired_differences,
    rates_at,
    score_intervals,
    share_interval,
    tango_interval,
    units_needed,
    wilson_interval,
)

# y (1 = fake) and p(fake): predictions at 0.5 are [0, 1, 0, 1] → tn=1, fp=1, fn=1, tp=1.
Y = [0, 0, 1, 1]
P = [0.1, 0.6, 0.4, 0.8]


def test_two_class_case_by_hand() -> None:
    m = binary_metrics(Y, P)
    assert m["n"] == 4 and m["threshold"] == 0.5
    assert m["confusion"] == [[1, 1], [1, 1]]
    for name in ("accuracy", "balanced_accuracy", "precision", "recall", "f1"):
        assert m[name] == pytest.approx(0.5), name
    # AUC: fake scores {0.4, 0.8} vs real {0.1, 0.6}: 0.4>0.1, 0.8>0.1, 0.8>0.6 win, 0.4<0.6 loses → 3/4.
    assert m["roc_auc"] == pytest.approx(0.75)
    # AP: ranked 0.8(F) 0.6(R) 0.4(F) 0.1(R): recall steps 0.5 at precision 1, 0.5 at precision 2/3.
    assert m["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # log loss: −mean(ln 0.9, ln 0.4, ln 0.4, ln 0.8).
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + 2 * math.log(0.4) + math.log(0.8)) / 4)
    # ECE: confidences 0.9 (right), 0.6 and 0.6 (both wrong, one bin), 0.8 (right):
    # 1/4·|1−0.9| + 2/4·|0−0.6| + 1/4·|1−0.8| = 0.025 + 0.3 + 0.05.
    assert m["ece"] == pytest.approx(0.375)
    # ROC points (FPR, FNR) by threshold: inf (0,1) · 0.8 (0,.5) · 0.6 (.5,.5) · 0.4 (.5,0) · 0.1 (1,0).
    assert m["eer"] == pytest.approx(0.5)
    assert m["eer_threshold"] == pytest.approx(0.6)
    # Brier: fakes (1 − 0.4)², (1 − 0.8)², reals 0.1², 0.6² → 0.77 / 4; FPR at 0.5: the real 0.6 of 2 reals.
    assert m["brier"] == pytest.approx(0.77 / 4)
    assert m["fpr"] == pytest.approx(0.5)
    # 2 real images allow no false alarm at FPR 1 % or 0.1 %: no operating point, and why.
    assert m["tpr_at_fpr"] == {"0.01": None, "0.001": None}
    assert set(m["reasons"]) == {"tpr_at_fpr.0.01", "tpr_at_fpr.0.001"}
    assert "needs at least 100 real images" in m["reasons"]["tpr_at_fpr.0.01"]
    json.dumps(m, allow_nan=False)


def test_threshold_moves_the_decision() -> None:
    # At 0.7 only 0.8 is called fake: tn=2, fp=0, fn=1, tp=1.
    m = binary_metrics(Y, P, threshold=0.7)
    assert m["confusion"] == [[2, 0], [1, 1]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    # Threshold-free figures do not move.
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(binary_metrics(Y, P)["log_loss"])


def test_threshold_half_is_argmax_including_the_tie() -> None:
    # p(fake) = 0.5 exactly is called fake (p ≥ T), as the service does.
    assert binary_metrics([1], [0.5])["confusion"] == [[0, 0], [0, 1]]


def test_perfect_separation() -> None:
    y, p = [0, 0, 1, 1], [0.2, 0.3, 0.7, 0.9]
    m = binary_metrics(y, p)
    assert m["accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["average_precision"] == 1.0
    # FNR reaches 0 at threshold 0.7 while FPR is still 0.
    assert equal_error_rate(np.array(y), np.array(p)) == (0.0, pytest.approx(0.7))


def test_imbalanced_balanced_accuracy() -> None:
    # 3 real, 1 fake; everything called real: accuracy 3/4, balanced (1 + 0)/2.
    m = binary_metrics([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["precision"] is None and m["reasons"]["precision"] == "no image was predicted fake"


def test_one_class_set_gives_null_auc_with_reason() -> None:
    m = binary_metrics([1, 1, 1], [0.9, 0.4, 0.8])
    for name in ("roc_auc", "average_precision", "eer", "eer_threshold"):
        assert m[name] is None
        assert "only one class (fake)" in m["reasons"][name]
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[0, 0], [1, 2]]
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8)) / 3)
    json.dumps(m, allow_nan=False)


def test_real_only_set_all_called_real() -> None:
    m = binary_metrics([0, 0], [0.1, 0.3])
    assert m["accuracy"] == 1.0
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    assert m["reasons"]["recall"] == "no fake image in the labelled set"
    assert "only one class (real" in m["reasons"]["roc_auc"]


def test_ece_bins_are_fifteen_equal_width() -> None:
    # Confidences 0.55 and 0.58 share the bin (8/15, 9/15]; 0.62 is in (9/15, 10/15].
    # Bin 1: both right, mean conf 0.565 → |1 − 0.565| · 2/3; bin 2: wrong → |0 − 0.62| · 1/3.
    ece = expected_calibration_error(np.array([1, 1, 1]), np.array([0.55, 0.58, 0.38]))
    assert ece == pytest.approx((1 - 0.565) * 2 / 3 + 0.62 / 3)
    # A perfectly calibrated bin: conf 0.75 with 3 of 4 right → 0.
    assert expected_calibration_error(np.array([1, 1, 1, 0]), np.array([0.75] * 4)) == pytest.approx(0.0)


def test_agreement_on_p_fake_vectors() -> None:
    ref, cur = [0.2, 0.6, 0.9], [0.4, 0.4, 0.9]
    a = agreement("fp32", ref, cur)
    assert a["reference"] == "fp32"
    assert a["flip_rate"] == pytest.approx(1 / 3)  # only the second image changes side
    assert a["max_abs_dp"] == pytest.approx(0.2)
    assert a["mean_abs_dp"] == pytest.approx(0.4 / 3)
    kl = (
        0.8 * math.log(0.8 / 0.6)
        + 0.2 * math.log(0.2 / 0.4)
        + 0.4 * math.log(0.4 / 0.6)
        + 0.6 * math.log(0.6 / 0.4)
        + 0.0
    ) / 3
    assert a["kl"] == pytest.approx(kl)


def test_agreement_on_class_matrices_uses_argmax_and_the_positive_column() -> None:
    # Three classes, fake = column 2. Image 1 keeps argmax 0; image 2 flips 1 → 2.
    ref = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2]])
    cur = np.array([[0.6, 0.1, 0.3], [0.2, 0.3, 0.5]])
    a = agreement("fp32", ref, cur, positive=2)
    assert a["flip_rate"] == pytest.approx(0.5)
    assert a["max_abs_dp"] == pytest.approx(0.3) and a["mean_abs_dp"] == pytest.approx(0.25)
    kl1 = 0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.1) + 0.1 * math.log(0.1 / 0.3)
    kl2 = 0.3 * math.log(0.3 / 0.2) + 0.5 * math.log(0.5 / 0.3) + 0.2 * math.log(0.2 / 0.5)
    assert a["kl"] == pytest.approx((kl1 + kl2) / 2)


def test_identical_probabilities_agree_fully_and_a_confident_miss_stays_finite() -> None:
    a = agreement("fp32", [0.1, 0.9], [0.1, 0.9])
    assert a["flip_rate"] == 0.0 and a["max_abs_dp"] == 0.0 and a["kl"] == pytest.approx(0.0)
    b = agreement("fp32", [1.0], [0.0])
    assert math.isfinite(b["kl"]) and b["kl"] > 20  # ln(1/1e-12) ≈ 27.6
    assert b["flip_rate"] == 1.0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError):
        agreement("fp32", [0.1, 0.2], [0.1])
    with pytest.raises(ValueError):
        binary_metrics([0, 1], [0.5])


# --- intervals ------------------------------------------------------------------------------------------------


def _binormal(n: int, seed: int = 0, shift: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Half fake; p(fake) = logistic of N(±shift/2, 1)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return y, 1.0 / (1.0 + np.exp(-(rng.normal(size=n) + shift * (y - 0.5))))


@pytest.mark.parametrize(("k", "n"), [(7, 10), (0, 300), (300, 300), (281, 300), (1, 12)])
def test_wilson_matches_scipy_for_whole_counts(k: int, n: int) -> None:
    from scipy.stats import binomtest

    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_wilson_known_values_and_accuracy_interval_in_binary_metrics() -> None:
    # Newcombe (1998), Table I: 81/263 → 0.2553–0.3662; 15/148 → 0.0624–0.1605.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    m = binary_metrics(Y, P)  # 2 of 4 right
    assert m["accuracy_ci"] == pytest.approx(list(wilson_interval(2, 4)))
    assert m["precision_ci"] == pytest.approx(list(wilson_interval(1, 2)))  # tp 1 of 2 called fake
    assert set(CI_KEYS) <= set(m) and m["ci_unit"] == "image" and m["n_groups"] is None
    json.dumps(m, allow_nan=False)


def test_balanced_accuracy_interval_combines_the_per_class_wilson_intervals() -> None:
    """MOVER: the bounds' distances are the per-class ones, added in quadrature and halved; at a perfect class the
    interval still reaches below 100 %."""
    y = np.array([1] * 20 + [0] * 30)
    p = np.array([0.9] * 20 + [0.1] * 27 + [0.9] * 3)  # TPR 20/20, TNR 27/30
    m = binary_metrics(y, p)
    (lt, ht), (ln, hn) = wilson_interval(20, 20), wilson_interval(27, 30)
    low = (1.0 + 0.9) / 2 - math.hypot(1.0 - lt, 0.9 - ln) / 2
    high = (1.0 + 0.9) / 2 + math.hypot(ht - 1.0, hn - 0.9) / 2
    assert m["balanced_accuracy_ci"] == pytest.approx([low, high])
    assert m["recall_ci"][0] < 0.9 and m["recall_ci"][1] == 1.0


def test_tango_interval_has_width_when_nothing_is_discordant() -> None:
    """0 discordant of 300 bounds the drop to ±1.26 pt (= 3.84 / 303.84), not to [0, 0] as a bootstrap would."""
    low, high = tango_interval(0, 0, 300, 1.959963984540054)
    assert (low, high) == pytest.approx((-3.8415 / 303.8415, 3.8415 / 303.8415), abs=1e-5)
    # Many discordant pairs: close to the Wald interval of (b − c)/n with variance (b + c − (b − c)²/n)/n².
    b, c, n = 300, 200, 10_000
    half = 1.96 * math.sqrt(b + c - (b - c) ** 2 / n) / n
    assert tango_interval(b, c, n, 1.96) == pytest.approx(((b - c) / n - half, (b - c) / n + half), abs=2e-4)
    ref = np.array([True] * 290 + [False] * 10)
    assert accuracy_drop_interval(ref, ref) == pytest.approx((low, high))


def test_weighted_roc_figures_match_sklearn_with_sample_weights() -> None:
    """The vectorised resample figures are sklearn's definitions with each image counted as often as drawn."""
    from sklearn import metrics as skm

    from bench.metrics import _Ranked

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.random(80) * (0.4 + 0.6 * y), 2)  # rounded: tied scores too
    ranked = _Ranked(y, p)
    auc, ap, eer = ranked.figures(np.ones((1, 80)), ("roc_auc", "average_precision", "eer"))
    assert (auc[0], ap[0], eer[0]) == pytest.approx(
        (skm.roc_auc_score(y, p), skm.average_precision_score(y, p), equal_error_rate(y, p)[0])
    )
    w = rng.integers(0, 3, (1, 80)).astype(float)
    auc, ap = ranked.figures(w, ("roc_auc", "average_precision"))
    assert auc[0] == pytest.approx(skm.roc_auc_score(y, p, sample_weight=w[0]))
    assert ap[0] == pytest.approx(skm.average_precision_score(y, p, sample_weight=w[0]))


def test_bootstrap_intervals_are_seeded_and_hold_the_point() -> None:
    y, p = _binormal(200)
    first = bootstrap_intervals(y, p)
    assert first == bootstrap_intervals(y, p)  # same seed, same intervals
    assert first != bootstrap_intervals(y, p, seed=1)
    m = binary_metrics(y, p)
    for name in ("roc_auc", "average_precision", "eer"):
        low, high = first[name]
        assert low <= m[name] <= high, name
    assert m["roc_auc_ci"] == pytest.approx(list(first["roc_auc"]))


def test_groups_widen_the_intervals_when_images_of_a_group_agree() -> None:
    """20 groups of 15 images that share their score: the data hold 20 independent units, not 300."""
    rng = np.random.default_rng(5)
    group = np.repeat(np.arange(20), 15)
    y = (np.arange(20) % 2)[group]
    z = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.0, 20)[group] + rng.normal(0, 0.1, 300)
    p = 1.0 / (1.0 + np.exp(-z))
    images, _ = score_intervals(y, p)
    groups, _ = score_intervals(y, p, groups=[f"video{g}" for g in group])
    for name in ("accuracy_ci", "roc_auc_ci", "balanced_accuracy_ci"):
        assert groups[name][1] - groups[name][0] > 2 * (images[name][1] - images[name][0]), name
    m = binary_metrics(y, p, groups=[f"video{g}" for g in group])
    assert m["ci_unit"] == "group" and m["n_groups"] == 20


def test_effective_n_without_groups_and_with_groups_that_agree_within() -> None:
    hits = np.array([1.0, 0.0] * 50)
    assert effective_n(hits, None) == (100.0, None)
    within = np.repeat([1.0, 0.0] * 5, 10)  # 10 groups of 10, each all right or all wrong
    n, df = effective_n(within, group_codes(np.repeat(np.arange(10), 10)))
    assert n == pytest.approx(10.0 * 9 / 10) and df == 9  # 10 groups' worth, less the g/(g − 1) correction
    everyone_right = np.ones(100)  # a share of 1: Kish's effective number of groups
    assert effective_n(everyone_right, group_codes(np.repeat(np.arange(4), 25))) == (4.0, 3)
    assert (
        share_interval(everyone_right, group_codes(np.repeat(np.arange(4), 25)))[0] < share_interval(everyone_right)[0]
    )


def test_paired_differences_of_a_variant_and_of_the_reference_itself() -> None:
    y, ref = _binormal(300, shift=3.0)
    same, _ = paired_differences(y, ref, ref)
    assert same["accuracy_drop_pt"] == 0.0 and same["discordant"] == [0, 0]
    assert same["accuracy_drop_pt_ci"] == pytest.approx([-1.2643, 1.2643], abs=1e-4)
    assert same["roc_auc_delta"] == 0.0 and same["roc_auc_delta_ci"] == [0.0, 0.0]
    worse = np.where(np.arange(300) < 60, 1.0 - ref, ref)  # the first 60 images' scores flipped
    found, why = paired_differences(y, ref, worse)
    assert why == {}
    assert found["accuracy_drop_pt"] > 10 and found["accuracy_drop_pt_ci"][0] > 5  # clearly worse
    assert found["roc_auc_delta_ci"][1] < 0 and found["roc_auc_delta"] < 0
    assert found == paired_differences(y, ref, worse)[0]  # seeded
    one_class, why = paired_differences(np.ones(4, dtype=int), ref[:4], ref[:4])
    assert one_class["roc_auc_delta"] is None and "one class" in why["roc_auc_delta"]


def test_units_needed_scales_as_one_over_root_n_or_projects_the_interval() -> None:
    # Half-width 1.0 towards a limit 0.5 away: four times the images.
    assert units_needed(300, 0.0, (-1.0, 1.0), 0.5) == 1200
    assert units_needed(300, 0.5, (-0.5, 1.5), 0.5) is None  # on the limit: no size decides it
    z = 1.959963984540054
    project = lambda s: tuple(100 * x for x in tango_interval(0, 0, 300 * s, z))  # noqa: E731
    # nothing discordant: Tango's bound is z²/(n + z²) ≤ 0.5 % from n ≈ 761
    assert units_needed(300, 0.0, project(1.0), 0.5, project) == 770


# --- detector operating points, Brier, reliability (issue 27) -------------------------------------------------


def _brute_operating_point(y: np.ndarray, p: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Independent of sklearn: every distinct score as a threshold, the largest TPR whose FPR ≤ α, and the TPR at
    FPR α on the straight line to the next threshold down."""
    cuts = [math.inf, *sorted(set(p.tolist()), reverse=True)]
    curve = [
        (float(((p >= c) & (y == 0)).sum() / (y == 0).sum()), float(((p >= c) & (y == 1)).sum() / y.sum()), c)
        for c in cuts
    ]
    below = [pt for pt in curve if pt[0] <= alpha + 1e-12]
    fa, ta, threshold = max(below, key=lambda pt: (pt[0], pt[1]))
    after = [pt for pt in curve if pt[0] > alpha + 1e-12]
    if not after:
        return ta, fa, threshold
    fb, tb, _ = min(after, key=lambda pt: (pt[0], pt[1]))
    return ta + (alpha - fa) / (fb - fa) * (tb - ta), fa, threshold


def test_tpr_at_fpr_matches_a_brute_force_roc_and_the_bootstrap_statistic() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(700) < 0.5).astype(np.int64)
    p = np.round(1 / (1 + np.exp(-rng.normal(np.where(y == 1, 1.0, -1.0), 1.0))), 2)  # rounded: ties on purpose
    for alpha in (0.01, 0.05):
        point = operating_point(y, p, alpha)
        assert point is not None
        tpr, fpr, threshold = _brute_operating_point(y, p, alpha)
        assert point["tpr"] == pytest.approx(tpr)
        assert point["fpr"] == pytest.approx(fpr) and point["fpr"] <= alpha
        assert point["threshold"] == pytest.approx(threshold)
        # the threshold really gives that FPR and TPR
        assert float((p[y == 0] >= point["threshold"]).mean()) == pytest.approx(point["fpr"])
        assert float((p[y == 1] >= point["threshold"]).mean()) == pytest.approx(point["tpr_at_threshold"])
        # the vectorised figure the bootstrap resamples is the same figure at unit weights
        assert _Ranked(y, p).figures(np.ones((1, len(y))), [f"tpr_at_fpr:{alpha:g}"])[0][0] == pytest.approx(tpr)


def test_detector_metrics_hold_brier_fpr_and_reliability_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.55, 0.95, 0.45, 0.65, 0.85, 1.0])
    found, reasons = detector_metrics(y, p, threshold=0.5)
    assert found["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert found["fpr"] == pytest.approx(2 / 4)  # 0.55 and 0.95
    rel = found["reliability"]
    assert rel["count"] == [1, 1, 0, 0, 1, 1, 1, 0, 1, 2]  # 1.0 falls in the last bin
    assert rel["mean_p"][9] == pytest.approx((0.95 + 1.0) / 2) and rel["fake_rate"][9] == pytest.approx(0.5)
    assert rel["mean_p"][2] is None and rel["fake_rate"][2] is None
    assert found["tpr_at_fpr"] == {"0.01": None, "0.001": None} and "tpr_at_fpr.0.01" in reasons
    assert found["brier_ci"] is not None and found["brier_ci"][0] <= found["brier"] <= found["brier_ci"][1]


def test_operating_point_intervals_hold_the_point_are_seeded_and_need_five_false_alarms() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(1200) < 0.5).astype(np.int64)
    p = 1 / (1 + np.exp(-rng.normal(np.where(y == 1, 1.3, -1.3), 1.0)))
    first, _ = detector_metrics(y, p)
    again, _ = detector_metrics(y, p)
    point = first["tpr_at_fpr"]["0.01"]
    assert point is not None and point["tpr_ci"] == again["tpr_at_fpr"]["0.01"]["tpr_ci"]
    low, high = point["tpr_ci"]
    assert 0 <= low <= point["tpr"] <= high <= 1 and high - low > 0.02
    assert first["tpr_at_fpr"]["0.001"] is None  # ~600 real images: no false alarm allowed at 0.1 %
    few, why = detector_metrics(y[:500], p[:500])  # ~250 real images: 2.5 false alarms at 1 %: a point, no interval
    assert few["tpr_at_fpr"]["0.01"]["tpr"] is not None and few["tpr_at_fpr"]["0.01"]["tpr_ci"] is None
    assert "an interval needs at least 500 real images" in why["tpr_at_fpr.0.01.tpr_ci"]


def test_rates_at_counts_and_wilson_intervals() -> None:
    y = np.array([0] * 10 + [1] * 5)
    p = np.array([0.9, 0.2] + [0.1] * 8 + [0.95, 0.8, 0.7, 0.3, 0.2])
    found = rates_at(y, p, 0.75)
    assert (found["false_alarms"], found["n_real"], found["detected"], found["n_fake"]) == (1, 10, 2, 5)
    assert found["fpr"] == pytest.approx(0.1) and found["tpr"] == pytest.approx(0.4)
    low, high = wilson_interval(1, 10) or (0, 0)
    assert found["fpr_ci"] == [pytest.approx(low), pytest.approx(high)]
