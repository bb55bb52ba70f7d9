"""Shortcut audit of a labelled set: can its files' metadata alone tell real from fake?

Published detectors learn a data set's shortcuts — JPEG quality, image size, file format — instead of the
artefacts they are meant to see ("Fake or JPEG?", on GenImage). If a classifier that never looks at a pixel
separates the classes, a model's AUC on that set says little. ``bench audit`` (and ``bench eval``/``bench matrix``,
which run it on their set: it reads headers only) trains one and reports how well it does.

Features per image, read from the file's header (no pixel is decoded): format, width, height, aspect (w / h),
estimated JPEG quality (the IJG quality whose scaled standard luminance table is closest to the file's first
quantisation table; −1 for other formats), chroma subsampling (Pillow's ``get_sampling``: 0 = 4:4:4,
1 = 4:2:2, 2 = 4:2:0; −1 otherwise), EXIF presence, bytes per pixel (file size / (w · h)).

Classifier: scikit-learn's random forest (200 trees, seeded), scored out of fold by 5-fold cross-validation
stratified by class (``StratifiedGroupKFold`` when the set has groups, so one group never sits on both sides).
``metadata_auc`` is the ROC AUC of the out-of-fold p(fake), with its 95 % interval from bench.metrics' expanded
BCa bootstrap over images (or groups). Verdict against ``SHORTCUT_AUC`` (0.6): ``shortcut`` when the whole
interval lies above it, ``no shortcut`` when it lies at or below it, else ``inconclusive``; a warning whenever the
point passes 0.6. Separating features: each feature's own AUC (numbers by value; a format or subsampling by the
share of fakes among images sharing it), listed when max(AUC, 1 − AUC) ≥ 0.6.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench.datasets import LabelledSet, label_mapping
from bench.errors import InputError
from bench.metrics import bootstrap_intervals, group_codes
from bench.results import DatasetAudit, DatasetInfo

SHORTCUT_AUC = 0.6
FOLDS = 5
TREES = 200
SEED = 0
FEATURES = (
    "format",
    "width",
    "height",
    "aspect",
    "jpeg_quality",
    "chroma_subsampling",
    "exif",
    "bytes_per_pixel",
)
CATEGORICAL = frozenset({"format", "chroma_subsampling"})
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")

# The IJG standard luminance quantisation table (ITU-T T.81 Annex K), in natural order.
_LUMA = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.float64,
)  # fmt: skip


def ijg_table(quality: int) -> np.ndarray:
    """The luminance table libjpeg writes at ``quality`` (jcparam.c's ``jpeg_quality_scaling``, baseline)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((_LUMA * scale + 50) / 100), 1, 255)


_SORTED_TABLES = np.stack([np.sort(ijg_table(q)) for q in range(1, 101)])


def estimate_jpeg_quality(table: Any) -> int:
    """The IJG quality (1–100) whose luminance table is closest to ``table`` (64 values, any order: compared
    sorted, so natural and zig-zag order read the same)."""
    values = np.sort(np.asarray(list(table), dtype=np.float64))
    if values.shape != (64,):
        return -1
    return int(np.argmin(np.abs(_SORTED_TABLES - values).sum(axis=1))) + 1


def image_features(path: Path) -> dict[str, Any]:
    """The audit's features of one file, from its header (module docstring); raises OSError/ValueError when the
    file does not open as an image."""
    from PIL import Image, JpegImagePlugin

    size = path.stat().st_size
    with Image.open(path) as img:
        width, height = img.size
        fmt = str(img.format or "?")
        quality, sampling = -1, -1
        if fmt in ("JPEG", "MPO"):
            tables = getattr(img, "quantization", None) or {}
            if tables:
                quality = estimate_jpeg_quality(tables[min(tables)])
            sampling = int(JpegImagePlugin.get_sampling(img))
        exif = bool(img.info.get("exif")) or len(img.getexif()) > 0
    return {
        "format": fmt,
        "width": width,
        "height": height,
        "aspect": width / height if height else 0.0,
        "jpeg_quality": quality,
        "chroma_subsampling": sampling,
        "exif": int(exif),
        "bytes_per_pixel": size / max(1, width * height),
    }


def _matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    """Features as numbers: the format by its index in ``_FORMATS`` (others after), the rest as they are."""
    formats = {name: i for i, name in enumerate(_FORMATS)}
    return np.array(
        [
            [float(formats.get(r["format"], len(_FORMATS))) if f == "format" else float(r[f]) for f in FEATURES]
            for r in rows
        ],
        dtype=np.float64,
    )


def _separation(name: str, column: list[Any], y: np.ndarray) -> float:
    """The feature's own ROC AUC for fake: by value, or for a category by the share of fakes sharing it."""
    from sklearn.metrics import roc_auc_score

    if name in CATEGORICAL:
        fakes: Counter[Any] = Counter()
        totals: Counter[Any] = Counter()
        for value, label in zip(column, y, strict=True):
            totals[value] += 1
            fakes[value] += int(label)
        score = np.array([fakes[v] / totals[v] for v in column])
    else:
        score = np.asarray(column, dtype=np.float64)
    return float(roc_auc_score(y, score))


def _summary(name: str, column: list[Any]) -> Any:
    """What one class looks like in a feature: its most common category, or its median."""
    if not column:
        return None
    if name in CATEGORICAL or name == "exif":
        return Counter(column).most_common(1)[0][0]
    return round(float(np.median(np.asarray(column, dtype=np.float64))), 4)


def audit_dataset(
    labelled: LabelledSet,
    labels: dict[int, str] | None = None,
    positive: int | None = None,
    *,
    folds: int = FOLDS,
    seed: int = SEED,
) -> dict[str, Any]:
    """The results contract's ``audit`` object for ``labelled`` (module docstring). The fake class is found as the
    evaluation finds it (``labels``/``positive``: the model's; by default the fake/real synonyms)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    out: dict[str, Any] = {
        "n": 0,
        "n_fake": 0,
        "features": list(FEATURES),
        "classifier": f"random forest ({TREES} trees), {folds}-fold cross-validation stratified by class",
        "shortcut_auc": SHORTCUT_AUC,
        "metadata_auc": None,
        "metadata_auc_ci": None,
        "ci_unit": "image",
        "verdict": "inconclusive",
        "separating": [],
        "warnings": [],
        "skipped": [],
        "reasons": {},
    }
    if not labelled.labelled:
        out["reasons"]["metadata_auc"] = "no labels: the audit needs real and fake images"
        return out
    if labels is None:
        labels, positive = {0: "real", 1: "fake"}, 1
    mapping = label_mapping(labelled.counts(), labels, positive)
    rows, y_list, groups = [], [], []
    for item in labelled.items:
        try:
            rows.append(image_features(item.path))
        except (OSError, ValueError, SyntaxError) as exc:
            out["skipped"].append({"path": labelled.relpath(item.path), "reason": str(exc) or type(exc).__name__})
            continue
        y_list.append(int(mapping[(item.label or "").strip().lower()] == positive))
        groups.append(item.group or "")
    y = np.array(y_list, dtype=np.int64)
    out["n"], out["n_fake"] = len(y), int(y.sum())
    grouped = labelled.groups is not None
    codes = group_codes(groups) if grouped else None
    units = len(set(groups)) if grouped else len(y)
    per_class = min(int(y.sum()), int((1 - y).sum())) if len(y) else 0
    if per_class < folds or units < folds:
        out["reasons"]["metadata_auc"] = (
            f"needs at least {folds} images of each class ({folds} groups) for {folds}-fold cross-validation; "
            f"the set has {per_class} of the smaller class"
        )
        return out
    x = _matrix(rows)
    forest = RandomForestClassifier(n_estimators=TREES, min_samples_leaf=2, random_state=seed, n_jobs=1)
    if grouped:
        splitter: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        out["ci_unit"] = "group"
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(forest, x, y, cv=splitter, groups=codes, method="predict_proba")[:, 1]
    from sklearn.metrics import roc_auc_score

    out["metadata_auc"] = float(roc_auc_score(y, scores))
    interval = bootstrap_intervals(y, scores, groups=codes, fields=("roc_auc",))["roc_auc"]
    out["metadata_auc_ci"] = None if interval is None else [interval[0], interval[1]]
    if interval is None:
        out["reasons"]["metadata_auc_ci"] = "too few images of each class to resample"
    elif interval[0] > SHORTCUT_AUC:
        out["verdict"] = "shortcut"
    elif interval[1] <= SHORTCUT_AUC:
        out["verdict"] = "no shortcut"
    separating = []
    for name in FEATURES:
        column = [r[name] for r in rows]
        auc = _separation(name, column, y)
        if max(auc, 1 - auc) >= SHORTCUT_AUC:
            separating.append(
                {
                    "feature": name,
                    "auc": auc,
                    "real": _summary(name, [c for c, t in zip(column, y, strict=True) if t == 0]),
                    "fake": _summary(name, [c for c, t in zip(column, y, strict=True) if t == 1]),
                }
            )
    out["separating"] = sorted(separating, key=lambda s: -abs(s["auc"] - 0.5))
    if out["metadata_auc"] > SHORTCUT_AUC:
        ci = out["metadata_auc_ci"]
        shown = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        names = ", ".join(s["feature"] for s in out["separating"]) or "no single feature: a combination"
        out["warnings"].append(
            f"metadata alone tells real from fake: metadata_auc {out['metadata_auc']:.3f}{shown} > {SHORTCUT_AUC} "
            f"(separating: {names}); a model's AUC on this set may measure the files, not the artefacts"
        )
    return out


def fmt_auc(audit: Mapping[str, Any] | None) -> str:
    """``0.97 [0.95, 0.99]`` (or "—") for tables and logs."""
    if not audit or audit.get("metadata_auc") is None:
        return "—"
    ci = audit.get("metadata_auc_ci")
    auc = float(audit["metadata_auc"])
    return f"{auc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and all(math.isfinite(v) for v in ci) else "")


def with_audit(
    labelled: LabelledSet, log: Any = None, labels: dict[int, str] | None = None, positive: int | None = None
) -> DatasetInfo:
    """The set's fingerprint with its ``audit`` (bench eval, bench matrix); the warning said on ``log`` as well. An
    audit that cannot run (a label the synonyms do not place) is recorded with the reason, never fatal."""
    info = labelled.fingerprint()
    if not labelled.labelled:
        return info
    try:
        found = audit_dataset(labelled, labels or None, positive if labels else None)
    except InputError as exc:
        found = {"metadata_auc": None, "verdict": "inconclusive", "warnings": [], "reasons": {"metadata_auc": str(exc)}}
    for warning in found.get("warnings") or []:
        if log is not None:
            log(f"warning: shortcut audit: {warning}")
    info["audit"] = cast(DatasetAudit, found)
    return info


__all__ = [
    "FEATURES",
    "SHORTCUT_AUC",
    "audit_dataset",
    "estimate_jpeg_quality",
    "fmt_auc",
    "image_features",
    "with_audit",
]
