"""Accuracy metrics (positive class = fake; scikit-learn where it has them) and agreement with a reference.

Definitions, so that the figures can be recomputed from the stored predictions:

- decision rule: predicted fake ⇔ p(fake) ≥ threshold (0.5 by default, i.e. argmax for two classes).
- eer: from ``roc_curve`` (all thresholds kept), the point where |FNR − FPR| is smallest;
  eer = (FPR + FNR) / 2 there and ``eer_threshold`` is that point's threshold on p(fake).
- ece: expected calibration error of the decision, 15 equal-width bins (i/15, (i+1)/15] on the
  confidence of the predicted class (p(fake) when predicted fake, else 1 − p(fake));
  ece = Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|.
- log_loss: mean binary cross-entropy of p(fake), natural log.
- tpr_at_fpr (operating points, ``{"0.01": {...}, "0.001": {...}}``): at each target FPR α, ``tpr`` is the ROC
  curve (sklearn's ``roc_curve``, all thresholds, (0, 0) first) read at FPR α, on the straight line between the
  last point with FPR ≤ α and the next (the step curve's own point under-reads it by up to one real image's
  worth of FPR), with ``tpr_ci`` (a percentile bootstrap, expanded; None with the reason below ``MIN_ALARMS_CI``
  false alarms allowed, where it undercovers); ``threshold`` is the p(fake) cut-off a deployment would set, the
  point with the largest TPR whose FPR ≤ α, with the ``fpr`` and ``tpr_at_threshold`` reached there. None with the
  reason when the set has fewer than 1/α real images (no false alarm could be allowed at all).
- fpr: the share of real images predicted fake at the decision threshold (Wilson interval, ``fpr_ci``).
- brier: mean (p(fake) − y)², a proper score of the probabilities (calibration and sharpness together).
- reliability: p(fake) in ``RELIABILITY_BINS`` equal-width bins [i/10, (i+1)/10) (the last closed): per bin the
  images, their mean p(fake) and the share of them that are fake (None for an empty bin): the reliability diagram.
- agreement: flip_rate = share of images whose argmax differs from the reference's; |Δp(fake)| max and
  mean; kl = mean KL(reference ‖ current) over each image's class distribution, natural log, with the
  current probabilities clipped at 1e-12 so one confident miss stays finite.

Values that are undefined for the data (AUC on a one-class set, precision with nothing predicted fake)
are None, and ``reasons`` says why, keyed by field name.

Intervals (95 %, ``<metric>_ci`` = [low, high]; :func:`score_intervals`, :func:`paired_differences`). The unit
that varies is the image, or the **group** when the data set names one (source video, identity): images of
one group are not independent, so counting them as such would make every interval too narrow.

- accuracy, precision, recall: Wilson score interval on the share (closed form, good coverage near 0 and 1,
  never outside [0, 1]). With groups, on the *effective* number of images: n ÷ the design effect, the
  cluster-robust variance of the share over its binomial variance (Kish; at a share of 0 or 1, where that
  ratio is 0/0, the effective number of groups (Σm)²/Σm², as if every group were all right or all wrong),
  and with Student's t on g − 1 degrees of freedom for g groups, since the design effect is estimated too.
- balanced accuracy = mean of the per-class rates (TPR, TNR): each class's Wilson interval combined by MOVER
  (Zou & Donner 2008: the sum's bounds from each part's distance to its own bound). Not a bootstrap: at a
  class rate of 1.0 (common on easy sets) every resample gives 1.0 and a bootstrap interval shrinks to
  nothing, while Wilson still says how far below 1 the rate could be.
- ROC AUC, average precision, EER, ECE, Brier: BCa bootstrap (``scipy.stats.bootstrap``) over
  images or groups, stratified by class (groups: by the classes they hold) so every resample has both classes;
  the figures of a resample are the same definitions as above with each image weighted by how often it was drawn
  (vectorised, so 2,000 resamples of a few thousand images take well under a second). Percentile intervals
  above ``BCA_MAX_UNITS`` units (BCa's jackknife costs units², and its correction matters at small n) and
  where BCa is undefined (a degenerate bootstrap distribution). Every bootstrap is an *expanded* one
  (:func:`expanded_level`): a plain one is too narrow with few units (with 20 groups of 5 images, a plain BCa
  interval missed the AUC about twice as often as it should; ``coverage.py --alternatives`` counts both).
- accuracy drop between two variants on the same images (reference − current, points): Tango's score
  interval for paired proportions on the discordant pairs (reference right and current wrong; the reverse).
  Not a bootstrap: with no discordant image a paired bootstrap gives [0, 0], a certainty 300 images do not
  give (Tango: the drop lies within ±1.26 pt). Groups: effective n from the design effect of the per-image
  difference, and t, as above.
- ROC AUC difference (current − reference): paired percentile bootstrap, the same images (or groups) drawn
  for both variants. Percentile, not BCa: the paired difference's bootstrap distribution is lumpy (few image
  pairs change order), which throws BCa's bias correction off (at n = 100 it undercovered where percentile did
  not; ``coverage.py --alternatives`` counts both).

Every bootstrap is seeded (``seed``, default ``CI_SEED``): the same inputs give the same interval.
Coverage, simulated: ``tests/benchmarks/coverage.py`` (docs/measurements/accuracy-coverage.json).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
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
CI_LEVEL = 0.95
CI_SEED = 0
N_BOOT = 2000
RELIABILITY_BINS = 10
TARGET_FPRS = (0.01, 0.001)  # the operating points reported: FPR 1 % and 0.1 %
# TPR at FPR α gets an interval only when the set allows this many false alarms (n_real · α): with ~1 its bootstrap
# covered 68 %, with ~5 93 % (tests/benchmarks/detector_targets.py coverage)
MIN_ALARMS_CI = 5.0
BCA_MAX_UNITS = 2000  # above: percentile intervals (BCa's jackknife costs units², its correction matters at small n)
WILSON_FIELDS = ("accuracy", "balanced_accuracy", "precision", "recall")
BOOTSTRAP_FIELDS = ("roc_auc", "average_precision", "eer", "ece")
CI_FIELDS = (*WILSON_FIELDS, *BOOTSTRAP_FIELDS)
# Each figure's 95 % interval, then what an interval's unit is ("image" | "group") and how many groups there are.
CI_KEYS = (*(f"{name}_ci" for name in CI_FIELDS), "ci_unit", "n_groups")
# Detector operating points and calibration (issue 27): see the module docstring.
DETECTOR_KEYS = ("tpr_at_fpr", "fpr", "fpr_ci", "brier", "brier_ci", "reliability")


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_fake: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Every accuracy figure of the results contract for labels ``y_true`` (1 = fake) and scores ``p_fake``, with
    their intervals over images, or over ``groups`` (one name per image) when given."""
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
    extra: dict[str, Interval | None] = dict.fromkeys(detector_fields(y, p))
    intervals, undefined = score_intervals(y, p, threshold, groups, extra=extra)
    out.update(intervals)
    out["ci_unit"] = "image" if groups is None else "group"
    out["n_groups"] = None if groups is None else len(set(map(str, groups)))
    detector, detector_reasons = detector_metrics(y, p, threshold, groups, intervals=extra)
    out.update(detector)
    kept = {k: v for k, v in undefined.items() if out[k.removesuffix("_ci")] is not None}
    out["reasons"] = {**reasons, **kept, **detector_reasons}
    return {k: out[k] for k in ("n", "threshold", *METRIC_FIELDS, *CI_KEYS, *DETECTOR_KEYS, "confusion", "reasons")}


def unlabelled_metrics(n: int, threshold: float, reason: str = "no labels") -> dict[str, Any]:
    """The metrics object of a run without labels: every figure None, with the reason."""
    out: dict[str, Any] = {"n": n, "threshold": threshold}
    out.update(dict.fromkeys(METRIC_FIELDS))
    out.update(dict.fromkeys(CI_KEYS))
    out.update(dict.fromkeys(DETECTOR_KEYS))
    out["ci_unit"] = "image"
    out["confusion"] = None
    out["reasons"] = {name: reason for name in (*METRIC_FIELDS, "confusion")}
    return out


def operating_point(y_true: np.ndarray, p_fake: np.ndarray, target_fpr: float) -> dict[str, float] | None:
    """The ROC point with the largest TPR whose FPR ≤ ``target_fpr``: {"tpr", "fpr", "threshold"} (module docstring);
    None when fewer than 1/α real images (or no fake one) leave no such point but FPR 0."""
    from sklearn.metrics import roc_curve

    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(p_fake, dtype=np.float64)
    n_real = int((y == 0).sum())
    if n_real * target_fpr < 1 - 1e-9 or not (y == 1).any():
        return None
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    i = int(np.flatnonzero(fpr <= target_fpr + 1e-12)[-1])
    threshold = float(thresholds[i])
    if not math.isfinite(threshold):  # the (0, 0) point: above every score
        threshold = math.nextafter(float(p.max()), math.inf)
    at_alpha = float(_interpolate(fpr[None, :], tpr[None, :], target_fpr)[0])
    return {"tpr": at_alpha, "threshold": threshold, "fpr": float(fpr[i]), "tpr_at_threshold": float(tpr[i])}


def rates_at(y_true: np.ndarray, p_fake: np.ndarray, threshold: float) -> dict[str, Any]:
    """FPR and TPR of the decision p(fake) ≥ ``threshold``, their counts and Wilson intervals (threshold transfer)."""
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(p_fake, dtype=np.float64)
    called = p >= threshold
    out: dict[str, Any] = {}
    for name, cls in (("fpr", 0), ("tpr", 1)):
        members = y == cls
        hits = int(called[members].sum())
        out[name] = float(hits / members.sum()) if members.any() else None
        found = wilson_interval(hits, int(members.sum()))
        out[f"{name}_ci"] = None if found is None else [found[0], found[1]]
        out["n_real" if cls == 0 else "n_fake"] = int(members.sum())
        out["false_alarms" if cls == 0 else "detected"] = hits
    return out


def reliability(y_true: np.ndarray, p_fake: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """The reliability diagram's data: per equal-width bin of p(fake), images, mean p(fake), share fake."""
    y, p = np.asarray(y_true, dtype=np.float64), np.clip(np.asarray(p_fake, dtype=np.float64), 0.0, 1.0)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    return {
        "bins": bins,
        "count": [int(c) for c in count],
        "mean_p": [float(s / c) if c else None for s, c in zip(sum_p, count, strict=True)],
        "fake_rate": [float(s / c) if c else None for s, c in zip(sum_y, count, strict=True)],
    }


def detector_metrics(
    y_true: np.ndarray,
    p_fake: np.ndarray,
    threshold: float = 0.5,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    target_fprs: Sequence[float] = TARGET_FPRS,
    n_boot: int = N_BOOT,
    seed: int = CI_SEED,
    level: float = CI_LEVEL,
    intervals: dict[str, Interval | None] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A deployment's figures (``DETECTOR_KEYS``, module docstring): TPR at each target FPR with its interval, the
    FPR at ``threshold``, the Brier score with its interval, the reliability diagram's data; and why where None.
    ``intervals``: the bootstrap intervals of :func:`detector_fields` when already resampled (binary_metrics does it
    in the same pass as the other figures'); else they are resampled here."""
    y, p = np.asarray(y_true, dtype=np.int64), np.asarray(p_fake, dtype=np.float64)
    codes = group_codes(groups)
    reasons: dict[str, str] = {}
    real = y == 0
    fpr_ci = share_interval(p[real] >= threshold, _sub(codes, real), level) if real.any() else None
    out: dict[str, Any] = {
        "tpr_at_fpr": {},
        "fpr": float((p[real] >= threshold).mean()) if real.any() else None,
        "fpr_ci": None if fpr_ci is None else [fpr_ci[0], fpr_ci[1]],
        "brier": float(((p - y) ** 2).mean()),
        "brier_ci": None,
        "reliability": reliability(y, p),
    }
    if not real.any():
        reasons["fpr"] = "no real image in the labelled set"
    both = real.any() and not real.all()
    points = {alpha: operating_point(y, p, alpha) if both else None for alpha in target_fprs}
    n_real = int(real.sum())
    if intervals is not None:
        found = dict(intervals)
    elif both:
        found = bootstrap_intervals(y, p, threshold, codes, n_boot=n_boot, seed=seed, level=level, fields=("brier",))
    else:
        found = {}
    # TPR at FPR α: a percentile bootstrap (expanded), and only with at least MIN_ALARMS_CI false alarms allowed
    resampled = [f"tpr_at_fpr:{a:g}" for a, pt in points.items() if pt is not None and n_real * a >= MIN_ALARMS_CI]
    if resampled:
        found.update(
            bootstrap_intervals(
                y, p, threshold, codes, n_boot=n_boot, seed=seed, level=level, fields=resampled, method="percentile"
            )
        )
    brier = found.get("brier")
    out["brier_ci"] = None if brier is None else [brier[0], brier[1]]
    if brier is None:
        reasons["brier_ci"] = (
            "too few images of each class to resample" if both else "the bootstrap resamples within each class"
        )
    for alpha, point in points.items():
        key = f"{alpha:g}"
        if point is None:
            out["tpr_at_fpr"][key] = None
            reasons[f"tpr_at_fpr.{key}"] = (
                "needs both classes"
                if not both
                else f"needs at least {math.ceil(1 / alpha)} real images to allow one false alarm at FPR {key}; "
                f"the set has {n_real}"
            )
            continue
        interval = found.get(f"tpr_at_fpr:{key}")
        out["tpr_at_fpr"][key] = {**point, "tpr_ci": None if interval is None else [interval[0], interval[1]]}
        if interval is None:
            reasons[f"tpr_at_fpr.{key}.tpr_ci"] = (
                f"an interval needs at least {math.ceil(MIN_ALARMS_CI / alpha)} real images ({MIN_ALARMS_CI:g} false "
                f"alarms at FPR {key}: with fewer the bootstrap undercovers); the set has {n_real}"
                if n_real * alpha < MIN_ALARMS_CI
                else "too few images of each class to resample"
            )
    return out, reasons


def detector_fields(y_true: np.ndarray, p_fake: np.ndarray) -> list[str]:
    """The BCa bootstrap fields of :func:`detector_metrics` (the Brier score), resampled with the other figures'."""
    y = np.asarray(y_true, dtype=np.int64)
    return [] if not (y == 0).any() or (y == 0).all() else ["brier"]


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
    idx, correct, conf = _calibration_bins(y_true, p_fake, threshold, bins)
    ece = 0.0
    for b in range(bins):
        members = idx == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return float(ece)


def _calibration_bins(
    y_true: Sequence[int] | np.ndarray, p_fake: Sequence[float] | np.ndarray, threshold: float, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: its confidence bin, whether the decision is right (0/1), the decision's confidence."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    pred = p >= threshold
    conf = np.where(pred, p, 1.0 - p)
    correct = (pred.astype(np.int64) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    return idx, correct, conf


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


# --- intervals (module docstring) ----------------------------------------------------------------------

# resamples × images weighed at once: 60 kB of float64, so that every temporary stays under malloc's 128 kB mmap
# threshold (larger ones are mapped afresh each time, and their page faults cost more than the arithmetic: ×2–4)
_BOOT_CELLS = 7_500

Interval = tuple[float, float]


def critical_value(level: float = CI_LEVEL, df: int | None = None) -> float:
    """The two-sided quantile of an interval: normal, or Student's t with ``df`` degrees of freedom (groups: the
    design effect is itself estimated from the groups, so their number, not the images', sets the width)."""
    from scipy.special import ndtri, stdtrit

    upper = 0.5 + level / 2.0
    return float(ndtri(upper) if df is None else stdtrit(max(df, 1), upper))


def wilson_interval(successes: float, trials: float, level: float = CI_LEVEL, df: int | None = None) -> Interval | None:
    """Wilson score interval of ``successes`` out of ``trials``. Real-valued counts are allowed (an effective number
    of images with groups), which scipy's ``binomtest(k, n).proportion_ci(method="wilson")``, the same interval
    for whole counts, does not take; ``df``: Student's t instead of the normal quantile."""
    if trials <= 0:
        return None
    z = critical_value(level, df)
    share = min(max(successes / trials, 0.0), 1.0)
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def group_codes(groups: Sequence[Any] | np.ndarray | None) -> np.ndarray | None:
    """Group names → integer codes 0..g−1 (None: no groups, every image its own unit)."""
    if groups is None:
        return None
    return np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1].astype(np.int64)


def effective_n(values: np.ndarray, groups: np.ndarray | None) -> tuple[float, int | None]:
    """How many independent images a mean of ``values`` (one figure per image) is worth, and the degrees of freedom
    its interval has: (n, None) without groups; with g groups n ÷ the design effect (at most n; the effective
    number of groups when every value is the same) and g − 1."""
    n = len(values)
    if groups is None or n == 0:
        return float(n), None
    _, codes = np.unique(groups, return_inverse=True)
    sizes = np.bincount(codes).astype(np.float64)
    g = len(sizes)
    deviations = values - values.mean()
    spread = float((deviations**2).sum())  # n² × the variance of the mean if the images were independent
    if g < 2 or spread <= 0:
        return float(n * n / (sizes**2).sum()), max(g - 1, 1)  # Kish's effective number of groups
    totals = np.bincount(codes, weights=deviations)
    design_effect = g / (g - 1) * float((totals**2).sum()) / spread
    return float(n if design_effect <= 1 else n / design_effect), g - 1


def share_interval(hits: np.ndarray, groups: np.ndarray | None = None, level: float = CI_LEVEL) -> Interval | None:
    """Wilson interval of the share of ``hits`` (one 0/1 per image), on the effective number of images."""
    hits = np.asarray(hits, dtype=np.float64)
    if not len(hits):
        return None
    trials, df = effective_n(hits, groups)
    return wilson_interval(float(hits.mean()) * trials, trials, level, df)


def _sub(groups: np.ndarray | None, members: np.ndarray) -> np.ndarray | None:
    return None if groups is None else groups[members]


def balanced_accuracy_interval(
    y: np.ndarray, pred: np.ndarray, groups: np.ndarray | None = None, level: float = CI_LEVEL
) -> Interval | None:
    """MOVER of the per-class Wilson intervals (module docstring); over the classes present, as sklearn's figure."""
    rates, bounds = [], []
    for cls in (0, 1):
        members = y == cls
        if members.any():
            hits = pred[members] == cls
            interval = share_interval(hits, _sub(groups, members), level)
            assert interval is not None
            rates.append(float(hits.mean()))
            bounds.append(interval)
    if not rates:
        return None
    k, mean = len(rates), sum(rates) / len(rates)
    below = math.sqrt(sum((r - lo) ** 2 for r, (lo, _) in zip(rates, bounds, strict=True))) / k
    above = math.sqrt(sum((hi - r) ** 2 for r, (_, hi) in zip(rates, bounds, strict=True))) / k
    return max(0.0, mean - below), min(1.0, mean + above)


def accuracy_drop_interval(
    ref_correct: np.ndarray, cur_correct: np.ndarray, groups: np.ndarray | None = None, level: float = CI_LEVEL
) -> Interval | None:
    """Interval of accuracy(reference) − accuracy(current) on the same images, fractions: Tango's score interval
    on the discordant pairs (module docstring), on the effective number of images with groups."""
    ref_ok, cur_ok = np.asarray(ref_correct, dtype=bool), np.asarray(cur_correct, dtype=bool)
    if ref_ok.shape != cur_ok.shape:
        raise ValueError(f"reference and current decisions differ in shape: {ref_ok.shape} vs {cur_ok.shape}")
    if not len(ref_ok):
        return None
    worse, better = ref_ok & ~cur_ok, cur_ok & ~ref_ok  # the reference right and the current wrong; the reverse
    n, df = effective_n(worse.astype(np.float64) - better.astype(np.float64), groups)
    return tango_interval(float(worse.mean()) * n, float(better.mean()) * n, n, critical_value(level, df))


def tango_interval(worse: float, better: float, n: float, z: float) -> Interval:
    """Tango's (1998) asymptotic score interval of (worse − better) / n for paired proportions: the differences Δ
    whose score statistic, with the discordant share re-estimated under Δ, stays within ±z. Recommended by
    Fagerland, Lydersen & Laake (2014) for paired binomial data; unlike a Wald or bootstrap interval it has
    width when nothing is discordant (0 of 300: ±1.26 pt)."""
    from scipy.optimize import brentq

    def score(delta: float) -> float:
        b = -worse - better + (2 * n - worse + better) * delta
        c = -better * delta * (1 - delta)
        q = (math.sqrt(max(b * b - 8 * n * c, 0.0)) - b) / (4 * n)  # restricted MLE of the "better" share
        gap = worse - better - n * delta
        variance = n * (2 * q + delta * (1 - delta))
        if abs(gap) < 1e-12:
            return 0.0
        return gap / math.sqrt(variance) if variance > 0 else math.copysign(math.inf, gap)

    point = (worse - better) / n
    low = brentq(lambda d: score(d) - z, -1.0, point) if score(-1.0) > z else -1.0
    high = brentq(lambda d: score(d) + z, point, 1.0) if score(1.0) < -z else 1.0
    return float(low), float(high)


class _Ranked:
    """One score vector ready for weighted ROC figures: images by descending score, tied scores one step."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.order = np.argsort(-p, kind="stable")
        ranked = p[self.order]
        steps = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        self.steps = steps if len(steps) < len(p) else None  # None: no tie, every image its own step
        self.fake = y[self.order].astype(np.float64)

    def figures(self, w: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        """ROC AUC / average precision / EER per row of image weights ``w`` — sklearn's definitions with each image
        counted as often as it was drawn (module docstring)."""
        ws = w[:, self.order]
        fake = ws * self.fake  # per step: weight of the fake and of the real images
        if self.steps is not None:
            fake, ws = np.add.reduceat(fake, self.steps, axis=1), np.add.reduceat(ws, self.steps, axis=1)
        real = ws - fake
        tp, fp = np.cumsum(fake, axis=1), np.cumsum(real, axis=1)
        positives, negatives = tp[:, -1], fp[:, -1]
        out = []
        for name in names:
            if name == "roc_auc":  # trapezoids of the ROC curve: a tie between a fake and a real counts half
                out.append((real * (tp - fake / 2)).sum(axis=1) / (positives * negatives))
            elif name == "average_precision":
                called = tp + fp
                precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
                out.append((fake * precision).sum(axis=1) / positives)
            elif name == "eer":  # roc_curve's points but its first, (0, 0): |FNR − FPR| = 1 there, never less
                fpr, fnr = fp / negatives[:, None], 1.0 - tp / positives[:, None]  # than at the last point, (1, 1)
                at = np.argmin(np.abs(fnr - fpr), axis=1)[:, None]
                out.append(((np.take_along_axis(fpr, at, 1) + np.take_along_axis(fnr, at, 1)) / 2.0)[:, 0])
            elif name.startswith("tpr_at_fpr:"):  # the ROC curve, (0, 0) first, read at FPR α between its points
                alpha = float(name.partition(":")[2])
                zero = np.zeros((len(w), 1))
                fpr = np.hstack([zero, fp / negatives[:, None]])
                tpr = np.hstack([zero, tp / positives[:, None]])
                out.append(_interpolate(fpr, tpr, alpha))
            else:
                raise ValueError(name)
        return out


def _interpolate(fpr: np.ndarray, tpr: np.ndarray, alpha: float) -> np.ndarray:
    """Per row of a ROC curve (FPR non-decreasing, (0, 0) first): the TPR at FPR α on the straight line between the
    last point with FPR ≤ α and the next one (the curve's own point where one sits at α)."""
    k = (fpr <= alpha + 1e-12).sum(axis=1) - 1
    nxt = np.minimum(k + 1, fpr.shape[1] - 1)
    rows = np.arange(len(fpr))
    fa, ta, fb, tb = fpr[rows, k], tpr[rows, k], fpr[rows, nxt], tpr[rows, nxt]
    gap = fb - fa
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(gap > 0, (alpha - fa) / gap, 0.0)
    return ta + np.clip(step, 0.0, 1.0) * (tb - ta)


def expanded_level(level: float, units: int) -> float:
    """The level a bootstrap is asked for so that its interval has ``level`` coverage with few units: Hesterberg's
    (2015) expanded percentile interval, the tails moved from ±z to ±√(m/(m−1))·t(m−1) for the smallest stratum's
    m units — a bootstrap distribution is too narrow by (m−1)/m in variance and ignores that the spread is
    estimated. At m = 10 groups 95 % becomes 98.3 %; at 150 images, 95.3 %."""
    from scipy.special import ndtr

    m = max(units, 2)
    return 1.0 - 2.0 * float(ndtr(-math.sqrt(m / (m - 1)) * critical_value(level, m - 1)))


class _Resampler:
    """Draws images, or groups, with replacement within strata of units holding the same classes, so every resample
    holds both classes; a figure is computed from how often each image was drawn."""

    def __init__(self, y: np.ndarray, groups: np.ndarray | None) -> None:
        self.by_image = groups is None
        self.unit = np.arange(len(y)) if groups is None else groups
        self.n_units = int(self.unit.max()) + 1 if len(y) else 0
        holds = np.zeros((self.n_units, 2), dtype=bool)
        holds[self.unit, y] = True
        kinds = holds[:, 0] * 1 + holds[:, 1] * 2  # 1 real only, 2 fake only, 3 both
        strata = [np.flatnonzero(kinds == kind) for kind in (1, 2, 3)]
        self.strata = tuple(s for s in strata if len(s) > 1)  # a stratum of one unit is that unit in every resample
        self.fixed = np.zeros(self.n_units)
        for s in strata:
            if len(s) == 1:
                self.fixed[s] = 1.0

    def intervals(
        self,
        statistic: Callable[[np.ndarray], list[np.ndarray]],
        n_boot: int,
        seed: int,
        level: float,
        method: str = "BCa",
        expand: bool = True,
    ) -> list[Interval | None]:
        """Intervals of each figure ``statistic`` computes from image weights (rows); None where undefined. BCa
        becomes percentile above ``BCA_MAX_UNITS`` units; ``expand``: :func:`expanded_level` (False: the plain
        interval, for the coverage simulation's comparison)."""
        from scipy.stats import bootstrap

        if not self.strata:
            return [None] * len(statistic(np.ones((1, len(self.unit)))))

        def on_draws(*draws: np.ndarray, axis: int = -1) -> np.ndarray:
            drawn = np.concatenate(draws, axis=-1)
            lead = drawn.shape[:-1]
            flat = drawn.reshape(-1, drawn.shape[-1])
            rows = np.arange(len(flat))[:, None] * self.n_units
            counts = np.bincount((flat + rows).ravel(), minlength=len(flat) * self.n_units)
            weights = counts.reshape(len(flat), self.n_units) + self.fixed
            values = np.stack(statistic(weights if self.by_image else weights[:, self.unit]))
            return values.reshape(len(values), *lead)

        method = method if self.n_units <= BCA_MAX_UNITS else "percentile"
        asked = expanded_level(level, min(len(s) for s in self.strata)) if expand else level
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")  # a degenerate distribution (every resample equal): handled below
            result = bootstrap(
                self.strata,
                on_draws,
                n_resamples=n_boot,
                batch=max(1, _BOOT_CELLS // max(1, len(self.unit))),
                vectorized=True,
                axis=-1,
                confidence_level=asked,
                method=method,
                rng=np.random.default_rng(seed),
            )
            lows = np.atleast_1d(result.confidence_interval.low).astype(np.float64)
            highs = np.atleast_1d(result.confidence_interval.high).astype(np.float64)
            dist = np.atleast_2d(result.bootstrap_distribution)
            tail = (1.0 - asked) / 2.0 * 100.0
            for i in np.flatnonzero(~(np.isfinite(lows) & np.isfinite(highs))):  # BCa undefined: percentile
                finite = dist[i][np.isfinite(dist[i])]
                if len(finite):
                    lows[i], highs[i] = np.percentile(finite, [tail, 100.0 - tail])
        return [
            (float(lo), float(hi)) if math.isfinite(lo) and math.isfinite(hi) else None
            for lo, hi in zip(lows, highs, strict=True)
        ]


def bootstrap_intervals(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float = 0.5,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = CI_SEED,
    level: float = CI_LEVEL,
    fields: Sequence[str] = BOOTSTRAP_FIELDS,
    method: str = "BCa",
    expand: bool = True,
) -> dict[str, Interval | None]:
    """Bootstrap intervals of ROC AUC, average precision, EER and ECE (``fields`` of ``BOOTSTRAP_FIELDS``; also
    ``brier`` and ``tpr_at_fpr:α``) over
    images or ``groups`` (codes, :func:`group_codes`); the labelled set must hold both classes. ``method`` and
    ``expand``: bench's choice (module docstring) unless the coverage simulation compares another."""
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    ranked = _Ranked(y, p)
    bins, correct, conf = _calibration_bins(y, p, threshold)
    gaps = np.zeros((len(y), ECE_BINS))
    gaps[np.arange(len(y)), bins] = correct - conf
    curve_fields = [f for f in fields if f not in ("ece", "brier")]
    squared = (p - y) ** 2

    def statistic(w: np.ndarray) -> list[np.ndarray]:
        found = dict(zip(curve_fields, ranked.figures(w, curve_fields), strict=True))
        if "ece" in fields:
            found["ece"] = np.abs(w @ gaps).sum(axis=1) / w.sum(axis=1)
        if "brier" in fields:
            found["brier"] = (w @ squared) / w.sum(axis=1)
        return [found[f] for f in fields]

    found = _Resampler(y, groups).intervals(statistic, n_boot, seed, level, method, expand)
    return dict(zip(fields, found, strict=True))


def auc_delta_interval(
    y: np.ndarray,
    ref_p: np.ndarray,
    cur_p: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = CI_SEED,
    level: float = CI_LEVEL,
    method: str = "percentile",
    expand: bool = True,
) -> Interval | None:
    """Paired bootstrap interval of ROC AUC(current) − ROC AUC(reference): the same images or groups drawn for both
    (``method``, ``expand``: as :func:`bootstrap_intervals`)."""
    y = np.asarray(y, dtype=np.int64)
    ref, cur = _Ranked(y, np.asarray(ref_p, np.float64)), _Ranked(y, np.asarray(cur_p, np.float64))

    def statistic(w: np.ndarray) -> list[np.ndarray]:
        return [cur.figures(w, ("roc_auc",))[0] - ref.figures(w, ("roc_auc",))[0]]

    return _Resampler(y, groups).intervals(statistic, n_boot, seed, level, method, expand)[0]


def score_intervals(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float = 0.5,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = CI_SEED,
    level: float = CI_LEVEL,
    extra: dict[str, Interval | None] | None = None,
) -> tuple[dict[str, list[float] | None], dict[str, str]]:
    """``<metric>_ci`` ([low, high]) of every ``CI_FIELDS`` figure, and why where there is none. ``extra``: more
    bootstrap fields (its keys, e.g. ``brier``) resampled in the same pass, their intervals filled in place."""
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    codes = group_codes(groups)
    pred = (p >= threshold).astype(np.int64)
    fake = y == 1
    found: dict[str, Interval | None] = {
        "accuracy": share_interval(pred == y, codes, level),
        "balanced_accuracy": balanced_accuracy_interval(y, pred, codes, level),
        "precision": share_interval(fake[pred == 1], _sub(codes, pred == 1), level) if pred.any() else None,
        "recall": share_interval(pred[fake] == 1, _sub(codes, fake), level) if fake.any() else None,
    }
    reasons: dict[str, str] = {}
    if fake.any() and not fake.all():
        fields = (*BOOTSTRAP_FIELDS, *(extra or {}))
        both = bootstrap_intervals(y, p, threshold, codes, n_boot=n_boot, seed=seed, level=level, fields=fields)
        found.update({k: v for k, v in both.items() if k in BOOTSTRAP_FIELDS})
        if extra is not None:
            extra.update({k: v for k, v in both.items() if k in extra})
        unit = "group" if codes is not None else "image"
        for name in BOOTSTRAP_FIELDS:
            if found[name] is None:
                reasons[f"{name}_ci"] = f"too few {unit}s of each class to resample"
    else:
        found.update(dict.fromkeys(BOOTSTRAP_FIELDS))
        reasons["ece_ci"] = "the bootstrap resamples within each class and needs both"
    return {f"{k}_ci": None if v is None else [v[0], v[1]] for k, v in found.items()}, reasons


def paired_differences(
    y: np.ndarray,
    ref_p: np.ndarray,
    cur_p: np.ndarray,
    threshold: float = 0.5,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = CI_SEED,
    level: float = CI_LEVEL,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A variant against the reference on the same images: the accuracy drop (reference − current, points) and the
    ROC AUC difference (current − reference, a fraction), each with its paired interval; and why where undefined."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    ref, cur = np.asarray(ref_p, dtype=np.float64), np.asarray(cur_p, dtype=np.float64)
    if not (y.shape == ref.shape == cur.shape) or not len(y):
        raise ValueError(
            f"labels and both p(fake) must be non-empty and of one shape: {y.shape} {ref.shape} {cur.shape}"
        )
    codes = group_codes(groups)
    ref_ok, cur_ok = (ref >= threshold) == y, (cur >= threshold) == y
    drop = accuracy_drop_interval(ref_ok, cur_ok, codes, level)
    out: dict[str, Any] = {
        "accuracy_drop_pt": float(ref_ok.mean() - cur_ok.mean()) * 100.0,
        "accuracy_drop_pt_ci": None if drop is None else [drop[0] * 100.0, drop[1] * 100.0],
        "discordant": [int((ref_ok & ~cur_ok).sum()), int((cur_ok & ~ref_ok).sum())],
        "roc_auc_delta": None,
        "roc_auc_delta_ci": None,
    }
    reasons: dict[str, str] = {}
    if 0 < y.sum() < len(y):
        out["roc_auc_delta"] = float(roc_auc_score(y, cur) - roc_auc_score(y, ref))
        delta = auc_delta_interval(y, ref, cur, codes, n_boot=n_boot, seed=seed, level=level)
        out["roc_auc_delta_ci"] = None if delta is None else [delta[0], delta[1]]
        if delta is None:
            reasons["roc_auc_delta_ci"] = "too few images of each class to resample"
    else:
        reasons["roc_auc_delta"] = reasons["roc_auc_delta_ci"] = "only one class in the common images"
    return out, reasons


def units_needed(
    units: int,
    point: float,
    interval: Sequence[float],
    limit: float,
    project: Callable[[float], Interval] | None = None,
) -> int | None:
    """About how many images (or groups) would make an interval like ``interval`` lie wholly on one side of ``limit``
    at the same point estimate, rounded up to two significant figures; None when the point sits on the limit (no
    sample size decides it) or a million times the units would not do.

    ``project(scale)`` gives the interval with every count multiplied by ``scale`` (the interval's own method, exact
    for the same shares); without it the half-width towards the limit narrows as 1/√n — right for shares well
    inside (0, 1), too many when almost nothing differs (there Wilson and Tango narrow as 1/n)."""
    low, high = interval
    gap = abs(point - limit)
    if gap <= 0 or units <= 0:
        return None
    if project is None:
        half = high - point if point < limit else point - low
        scale = max(1.0, (half / gap) ** 2)
    else:

        def decided(at: float) -> bool:
            lo, hi = project(at)
            return not lo <= limit <= hi

        if not decided(1e6):
            return None
        below, above = 1.0, 1e6
        while above / below > 1.01:
            middle = math.sqrt(below * above)
            below, above = (below, middle) if decided(middle) else (middle, above)
        scale = above
    needed = max(units + 1, math.ceil(units * scale))
    step = 10 ** max(0, len(str(needed)) - 2)
    return int(math.ceil(needed / step) * step)
