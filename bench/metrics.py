"""Accuracy metrics (positive class = fake; scikit-learn where it has them) and agreement with a reference.

Definitions, so that the figures can be recomputed from the stored predictions:

- decision rule: predicted fake ⇔ p(fake) ≥ threshold (0.5 by default, i.e. argmax for two classes).
- eer: from ``roc_curve`` (all thresholds kept), the point where |FNR − FPR| is smallest;
  eer = (FPR + FNR) / 2 there and ``eer_threshold`` is that point's threshold on p(fake).
- ece: expected calibration error of the decision, 15 equal-width bins (i/15, (i+1)/15] on the
  confidence of the predicted class (p(fake) when predicted fake, else 1 − p(fake));
  ece = Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|.
- log_loss: mean binary cross-entropy of p(fake), natural log.
- agreement: flip_rate = share of images whose argmax differs from the reference's; |Δp(fake)| max and
  mean; kl = mean KL(reference ‖ current) over each image's class distribution, natural log, with the
  current probabilities clipped at 1e-12 so one confident miss stays finite.

Values that are undefined for the data (AUC on a one-class set, precision with nothing predicted fake)
are None, and ``reasons`` says why, keyed by field name.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
KL_EPS = 1e-12
METRIC_FIELDS = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "average_precision",
    "eer",
    "eer_threshold",
    "log_loss",
    "ece",
)


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def binary_metrics(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Every accuracy figure of the results contract for labels ``y_true`` (1 = fake) and scores ``p_fake``."""
    from sklearn import metrics as skm

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and p_fake must be 1-D of one length, got {y.shape} and {p.shape}")
    if not len(y):
        return unlabelled_metrics(0, threshold, "no image was evaluated")
    pred = (p >= threshold).astype(np.int64)
    reasons: dict[str, str] = {}
    out: dict[str, Any] = {"n": len(y), "threshold": threshold}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on one-class sets; the reasons below say it instead
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
        out["precision"] = _num(skm.precision_score(y, pred, zero_division=np.nan))
        out["recall"] = _num(skm.recall_score(y, pred, zero_division=np.nan))
        out["f1"] = _num(skm.f1_score(y, pred, zero_division=np.nan))
        present = set(np.unique(y).tolist())
        if len(present) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y, p))
            out["average_precision"] = float(skm.average_precision_score(y, p))
            out["eer"], out["eer_threshold"] = equal_error_rate(y, p)
        else:
            only = "fake" if present == {1} else "real (not fake)"
            why = f"only one class ({only}) in the labelled set; ROC AUC, average precision and EER need both"
            for name in ("roc_auc", "average_precision", "eer", "eer_threshold"):
                out[name] = None
                reasons[name] = why
        out["log_loss"] = float(skm.log_loss(y, np.clip(p, 0.0, 1.0), labels=[0, 1]))
    out["ece"] = expected_calibration_error(y, p, threshold)
    if out["precision"] is None:
        reasons["precision"] = "no image was predicted fake"
    if out["recall"] is None:
        reasons["recall"] = "no fake image in the labelled set"
    if out["f1"] is None:
        reasons["f1"] = "no fake image in the set and none predicted fake"
    tn, fp, fn, tp = (int(v) for v in skm.confusion_matrix(y, pred, labels=[0, 1]).ravel())
    out["confusion"] = [[tn, fp], [fn, tp]]
    out["reasons"] = reasons
    return {k: out[k] for k in ("n", "threshold", *METRIC_FIELDS, "confusion", "reasons")}


def unlabelled_metrics(n: int, threshold: float, reason: str = "no labels") -> dict[str, Any]:
    """The metrics object of a run without labels: every figure None, with the reason."""
    out: dict[str, Any] = {"n": n, "threshold": threshold}
    out.update(dict.fromkeys(METRIC_FIELDS))
    out["confusion"] = None
    out["reasons"] = {name: reason for name in (*METRIC_FIELDS, "confusion")}
    return out


def equal_error_rate(y_true: np.ndarray, p_fake: np.ndarray) -> tuple[float, float]:
    """(eer, threshold) at the ROC point where |FNR − FPR| is smallest (module docstring)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y_true, p_fake, drop_intermediate=False)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    threshold = float(thresholds[i])
    return float((fpr[i] + fnr[i]) / 2.0), (threshold if math.isfinite(threshold) else 1.0)


def expected_calibration_error(
    y_true: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5, bins: int = ECE_BINS
) -> float:
    """ECE of the thresholded decision over ``bins`` equal-width confidence bins (module docstring)."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    pred = p >= threshold
    conf = np.where(pred, p, 1.0 - p)
    correct = (pred.astype(np.int64) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = idx == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return float(ece)


def agreement(
    reference_name: str,
    ref_probs: np.ndarray | Sequence[Any],
    probs: np.ndarray | Sequence[Any],
    positive: int | None = None,
) -> dict[str, Any]:
    """How far ``probs`` strays from the reference's: argmax flips, |Δp(fake)|, KL(ref ‖ cur).

    Each of ``ref_probs``/``probs`` is either an [n, k] matrix of class probabilities (``positive`` = the
    fake column) or an [n] vector of p(fake), read as the two-class distribution (1 − p, p); for a
    vector, a flip is a change of side of 0.5.
    """
    matrix = np.asarray(ref_probs).ndim == 2
    ref = _as_distribution(np.asarray(ref_probs, dtype=np.float64))
    cur = _as_distribution(np.asarray(probs, dtype=np.float64))
    if ref.shape != cur.shape:
        raise ValueError(f"reference and current probabilities differ in shape: {ref.shape} vs {cur.shape}")
    if not len(ref):
        raise ValueError("agreement needs at least one image")
    if matrix and positive is None:
        raise ValueError("positive is required for [n, k] probabilities")
    col = positive if matrix else 1
    flips = ref.argmax(axis=1) != cur.argmax(axis=1) if matrix else (ref[:, 1] >= 0.5) != (cur[:, 1] >= 0.5)
    dp = np.abs(ref[:, col] - cur[:, col])
    from scipy.special import rel_entr

    kl = rel_entr(ref, np.clip(cur, KL_EPS, None)).sum(axis=1)
    return {
        "reference": reference_name,
        "n": len(ref),
        "flip_rate": float(flips.mean()),
        "max_abs_dp": float(dp.max()),
        "mean_abs_dp": float(dp.mean()),
        "kl": float(kl.mean()),
    }


def _as_distribution(values: np.ndarray) -> np.ndarray:
    if values.ndim == 1:
        return np.stack([1.0 - values, values], axis=1)
    if values.ndim == 2:
        return values
    raise ValueError(f"probabilities must be [n] or [n, k], got shape {values.shape}")


def decide(probs: np.ndarray, positive: int, threshold: float) -> np.ndarray:
    """The one decision rule (CLI.md), shared by evaluator and service: per row, the fake class when
    p(fake) ≥ threshold, else the most probable other class."""
    others = probs.copy()
    others[:, positive] = -np.inf
    return np.where(probs[:, positive] >= threshold, positive, others.argmax(axis=1))


def versus_clean(
    clean: dict[str, Any], clean_p: np.ndarray, perturbed: dict[str, Any], perturbed_p: np.ndarray, threshold: float
) -> dict[str, Any]:
    """How a variant's figures under a perturbation differ from its own on the clean images (same images, same
    order): Δ ROC AUC and Δ accuracy (perturbed − clean, fractions), decision flips and |Δp(fake)|.

    A Δ is None, with ``reasons[name]``, when either side's figure is None (e.g. AUC on a one-class set).
    """
    cp, pp = np.asarray(clean_p, dtype=np.float64), np.asarray(perturbed_p, dtype=np.float64)
    if cp.shape != pp.shape or not len(cp):
        raise ValueError(f"clean and perturbed p(fake) must be non-empty and of one shape, got {cp.shape}, {pp.shape}")
    out: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name, field in (("delta_roc_auc", "roc_auc"), ("delta_accuracy", "accuracy")):
        a, b = clean.get(field), perturbed.get(field)
        out[name] = None if a is None or b is None else float(b) - float(a)
        if out[name] is None:
            reasons[name] = (perturbed.get("reasons") or {}).get(field) or (clean.get("reasons") or {}).get(
                field, f"{field} not measured"
            )
    dp = np.abs(pp - cp)
    out["flip_rate"] = float(((cp >= threshold) != (pp >= threshold)).mean())
    out["max_abs_dp"] = float(dp.max())
    out["mean_abs_dp"] = float(dp.mean())
    out["reasons"] = reasons
    return out
