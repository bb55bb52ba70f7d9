"""Metric functions against small cases whose expected values are worked out by hand below."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.metrics import agreement, binary_metrics, equal_error_rate, expected_calibration_error

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
    assert m["reasons"] == {}
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
