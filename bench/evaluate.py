"""Evaluate variants on a labelled set: batched inference through the Engine, metrics, agreement.

The ``accuracy`` object of a cell (results contract) is built here and nowhere else, so ``bench eval``,
``bench matrix``, ``bench ab`` and the reports agree on it; the three commands evaluate through :class:`Evaluator`.
Images that do not decode are skipped and listed with the reason (``strict=True``: an InputError instead); an
evaluation in which no image decodes is an InputError.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench.backends import open_engine
from bench.bundle import Bundle, positive_index
from bench.datasets import LabelledSet, load_labelled_set
from bench.engine import Engine, SessionSpec, cell_failure
from bench.errors import InputError
from bench.metrics import (
    agreement,
    binary_metrics,
    decide,
    operating_point,
    paired_differences,
    rates_at,
    share_interval,
    unlabelled_metrics,
    versus_clean,
    wilson_interval,
)
from bench.modelfile import model_info
from bench.perturb import DEFAULT_SEED, Perturbation, parse_perturbations
from bench.preprocess import ConfigFieldError, ImageError, PreprocessConfig, load_image, to_tensor
from bench.results import Accuracy, CellResult, Prediction
from bench.settings import check, setting
from bench.torch_engine import TorchEngine

AdvanceFn = Callable[[int], None]
StartFn = Callable[[str, int], AdvanceFn]
LogFn = Callable[[str], None]
TRANSFER_FPR = 0.01  # threshold transfer: the reference's threshold at this FPR, applied to every variant
CACHE_BYTES = 1 << 30  # decoded images and tensors kept for reuse across passes (perturbations, variants)
_ADDRESS = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")  # Pillow names the BytesIO: keep results diffable


def evaluate_engine(
    engine: Engine | TorchEngine,
    items: LabelledSet | Sequence[tuple[Path, int | None]],
    labels: dict[int, str],
    positive_index: int | None,
    threshold: float = 0.5,
    batch_size: int = 32,
    progress: AdvanceFn | None = None,
    strict: bool = False,
    *,
    preprocess: PreprocessConfig | None = None,
    root: Path | None = None,
    skipped: Sequence[dict[str, str]] = (),
    perturbations: Sequence[Perturbation] = (),
    source: ImageSource | None = None,
    groups: Sequence[str] | None = None,
    flip_batch_sizes: Sequence[int] = (),
) -> Accuracy:
    """The results contract's ``accuracy`` object for ``engine`` on ``items``.

    ``items`` is a LabelledSet (its labels are mapped with ``label_mapping``, its root and skipped rows
    used) or [(path, true label index)]; a None index marks an unlabelled set: predictions only, metrics
    None with the reason "no labels". ``preprocess`` defaults to the ``preprocessor_config.json`` next to
    the model file (``onnx/..`` or its own folder), else Hugging Face ViT defaults at the model's input
    size. Paths in ``predictions``/``skipped`` are relative to ``root`` when given. ``skipped`` (e.g.
    manifest rows whose file is missing) is listed first.

    ``perturbations`` (bench.perturb; ``clean`` among them is the object itself) add ``perturbations``: one
    entry per perturbation with the same metrics, the change against this variant's clean figures
    (``vs_clean``) and its own predictions. ``source`` shares decoded and preprocessed images between
    the variants of one run (it must hold the paths of ``items``, in order).

    Every figure has its 95 % interval (``<metric>_ci``, bench.metrics) over images, or over the data set's
    groups (a LabelledSet's ``group`` column, or ``groups``: one per item), which each prediction then carries,
    and ``group_slices`` gives the figures of each group (accuracy per generator or source).

    ``preprocessing`` records the preprocessing actually used and ``batch_size`` the batch of the evaluation:
    dynamic int8/uint8 quantisation computes its scales per batch, so a variant's decisions depend on it.
    ``flip_batch_sizes`` (e.g. the service's 1 and ``max_batch``) evaluates the clean images again at each of
    those batches (``batch_p_fake``), so :func:`add_agreement` can count the flips against the reference there.
    """
    if positive_index is None:
        raise InputError("no positive (fake) class: pass --positive-label NAME|INDEX to evaluate accuracy")
    if isinstance(items, LabelledSet):
        root = items.root if root is None else root
        skipped = [*items.skipped, *skipped]
        groups = items.groups if groups is None else groups
        items = items.indexed(labels, positive_index)
    if groups is not None and len(groups) != len(items):
        raise ValueError(f"{len(groups)} groups for {len(items)} images")
    check_threshold(threshold)
    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    fixed = engine.input.fixed_batch
    batch_size = fixed or batch_size
    cfg = preprocess or default_preprocess(engine)
    labelled = bool(items) and all(idx is not None for _, idx in items)
    perturbed = [p for p in perturbations if not p.is_clean]
    paths = [path for path, _ in items]
    if source is None:
        source = ImageSource(paths, cache_bytes=CACHE_BYTES if perturbed else 0)
    elif source.paths != paths:
        raise ValueError("the ImageSource holds other images than the items to evaluate")

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else str(path)

    start = time.perf_counter()
    done, matrix, infer_s = _run_pass(engine, source, Perturbation(), cfg, batch_size, progress, warm_up=True)
    wall_s = time.perf_counter() - start
    skip: list[dict[str, str]] = [dict(s) for s in skipped]
    for i in sorted(source.failed):
        exc = source.failed[i]
        if strict:
            raise InputError(f"{rel(paths[i])}: {exc}; fix or remove the file, or drop --strict to skip it") from exc
        skip.append({"path": rel(paths[i]), "reason": f"{exc.kind}: {_ADDRESS.sub('', str(exc))}"})
    if not done:
        first = f" (first: {skip[0]['path']}: {skip[0]['reason']})" if skip else ""
        raise InputError(f"no image could be evaluated: {len(skip)} skipped{first}; check the dataset")
    if matrix.ndim != 2 or (labels and matrix.shape[1] != len(labels)):
        raise InputError(
            f"{engine.model_path.name} outputs shape {list(matrix.shape)} but config.json names "
            f"{len(labels)} labels; the model and its config.json do not match"
        )
    if not 0 <= positive_index < matrix.shape[1]:
        raise InputError(f"positive label index {positive_index} is outside the model's {matrix.shape[1]} classes")
    done_paths = [rel(paths[i]) for i in done]
    done_truth = [items[i][1] for i in done]
    y = np.array([int(i == positive_index) for i in done_truth], dtype=np.int64) if labelled else None
    done_groups = None if groups is None else [groups[i] for i in done]

    def name(i: int | None) -> str | None:
        return None if i is None else labels.get(i, str(i))

    def scored(probs: np.ndarray) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        """p(fake), the metrics and the per-image predictions of one pass."""
        p_fake = probs[:, positive_index]
        pred_idx = decide(probs, positive_index, threshold)
        if y is not None:
            metrics = binary_metrics(y, p_fake, threshold, done_groups)
        else:
            metrics = unlabelled_metrics(len(done), threshold)
        predictions = [
            {"path": p, "p_fake": float(pf), "label": name(t), "pred": name(int(pi))}
            for p, pf, t, pi in zip(done_paths, p_fake, done_truth, pred_idx, strict=True)
        ]
        if done_groups is not None:
            for prediction, group in zip(predictions, done_groups, strict=True):
                prediction["group"] = group
        return p_fake, metrics, predictions

    clean_p, metrics, predictions = scored(matrix)
    result: dict[str, Any] = {
        "n": len(done_paths),
        "skipped": skip,
        "positive_label": name(positive_index),
        **{k: v for k, v in metrics.items() if k != "n"},
        "agreement": None,
        "images_per_s": round(len(done_paths) / infer_s, 3) if infer_s > 0 else None,
        "wall_s": round(wall_s, 4),
        "batch_size": batch_size,
        "preprocessing": cfg.describe(),
        "predictions": predictions,
    }
    if y is not None and done_groups is not None:
        result["group_slices"] = group_slices(y, clean_p, threshold, done_groups)
    extra = sorted({int(b) for b in flip_batch_sizes if int(b) >= 1 and int(b) != batch_size})
    if extra and not fixed:
        batch_p: dict[str, list[float]] = {str(batch_size): [float(v) for v in clean_p]}
        for b in extra:
            again, probs, _ = _run_pass(engine, source, Perturbation(), cfg, b, progress)
            if again != done:
                raise AssertionError(f"batch {b}: evaluated other images than the first pass")
            batch_p[str(b)] = [float(v) for v in probs[:, positive_index]]
        result["batch_p_fake"] = batch_p
    if perturbed:
        entries = []
        for perturbation in perturbed:
            t0 = time.perf_counter()
            again, probs, _ = _run_pass(engine, source, perturbation, cfg, batch_size, progress)
            if again != done:  # decoding failures are fixed by the clean pass; a perturbation cannot add any
                raise AssertionError(f"{perturbation.name}: evaluated other images than the clean pass")
            p_fake, pmetrics, ppredictions = scored(probs)
            entries.append(
                {
                    "perturbation": perturbation.name,
                    **pmetrics,
                    "vs_clean": versus_clean(metrics, clean_p, pmetrics, p_fake, threshold),
                    "agreement": None,
                    "wall_s": round(time.perf_counter() - t0, 4),
                    "predictions": ppredictions,
                }
            )
        result["perturbations"] = entries
    return cast(Accuracy, result)


def group_slices(y: np.ndarray, p_fake: np.ndarray, threshold: float, groups: Sequence[str]) -> list[dict[str, Any]]:
    """Per group (generator, source), in name order: images, fakes among them, accuracy with its Wilson interval, and
    the FPR (real images called fake) and TPR (fakes caught) at ``threshold`` where the group holds that class."""
    names = np.asarray([str(g) for g in groups])
    called = np.asarray(p_fake) >= threshold
    out = []
    for name in sorted(set(names.tolist())):
        members = names == name
        truth, calls = y[members], called[members]
        ci = share_interval(calls == truth)
        real, fake = truth == 0, truth == 1
        out.append(
            {
                "group": name,
                "n": int(members.sum()),
                "n_fake": int(fake.sum()),
                "accuracy": float((calls == truth).mean()),
                "accuracy_ci": None if ci is None else [ci[0], ci[1]],
                "fpr": float(calls[real].mean()) if real.any() else None,
                "tpr": float(calls[fake].mean()) if fake.any() else None,
            }
        )
    return out


def _run_pass(
    engine: Engine | TorchEngine,
    source: ImageSource,
    perturbation: Perturbation,
    cfg: PreprocessConfig,
    batch_size: int,
    progress: AdvanceFn | None,
    warm_up: bool = False,
) -> tuple[list[int], np.ndarray, float]:
    """Every image of ``source`` under ``perturbation`` through ``engine``: (indices evaluated, probabilities,
    seconds spent in inference). ``warm_up``: one untimed call first, as ORT's lazy set-up would otherwise
    dominate a small set's img/s."""
    fixed = engine.input.fixed_batch
    done: list[int] = []
    probs: list[np.ndarray] = []
    infer_s = 0.0
    for indices, tensors, failed in source.chunks(perturbation, cfg, batch_size):
        if progress is not None and failed:
            progress(failed)
        for lo in range(0, len(indices), batch_size):
            x = tensors[lo : lo + batch_size]
            n = len(x)
            if fixed and n < fixed:  # a model with a fixed batch axis: pad the last batch, drop the pad
                x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)])
            if warm_up:
                engine.predict_proba(x)
                warm_up = False
            t0 = time.perf_counter()
            out = engine.predict_proba(x)
            infer_s += time.perf_counter() - t0
            probs.append(np.asarray(out, dtype=np.float64)[:n])
            if progress is not None:
                progress(n)
        done.extend(indices)
    return done, (np.concatenate(probs) if probs else np.empty((0, 0))), infer_s


class ImageSource:
    """The images of one evaluation: decoded once, perturbed and preprocessed in parallel threads.

    Threads, not processes: nothing is copied between processes and no fork happens under ONNX Runtime's
    threads. Pillow releases the GIL while decoding, resizing and JPEG coding; numpy's noise generation and
    scipy's blur mostly hold it, so the gain depends on the mix (on the 64-px demo set, 1.1× with 2 threads
    on a shared 2-core box; inference, not this stage, dominates a perturbed evaluation there).

    Decoded images and finished tensors are kept while they fit in ``cache_bytes``, so later passes (each
    perturbation, each variant of a run) reuse them; beyond the budget they are recomputed. A file that
    does not decode is recorded in ``failed`` once and left out of every pass.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        seed: int = DEFAULT_SEED,
        workers: int | None = None,
        cache_bytes: int = 0,
    ) -> None:
        self.paths = list(paths)
        self.seed = seed
        self.workers = workers or _cores()
        self.failed: dict[int, ImageError] = {}
        self._budget = cache_bytes
        self._used = 0
        self._lock = threading.Lock()
        self._decoded: dict[int, Any] = {}
        self._tensors: dict[tuple[str, PreprocessConfig], tuple[list[int], np.ndarray]] = {}

    def _reserve(self, nbytes: int) -> bool:
        with self._lock:
            if self._used + nbytes > self._budget:
                return False
            self._used += nbytes
            return True

    def _image(self, i: int) -> Any:
        if i in self.failed:
            return None
        img = self._decoded.get(i)
        if img is None:
            try:
                img = load_image(self.paths[i])
            except ImageError as exc:
                self.failed[i] = exc
                return None
            if self._reserve(img.width * img.height * 3):
                self._decoded[i] = img
        return img

    def _tensor(self, i: int, perturbation: Perturbation, cfg: PreprocessConfig) -> np.ndarray | None:
        img = self._image(i)
        if img is None:
            return None
        return to_tensor(perturbation.apply(img, str(self.paths[i]), self.seed), cfg)

    def chunks(
        self, perturbation: Perturbation, cfg: PreprocessConfig, batch_size: int
    ) -> Iterator[tuple[list[int], np.ndarray, int]]:
        """(indices, NCHW tensors, images that failed to decode) in dataset order, a few batches at a time."""
        cached = self._tensors.get((perturbation.name, cfg))
        if cached is not None:
            yield cached[0], cached[1], 0
            return
        window = max(batch_size, 16) * 4
        kept: list[tuple[list[int], np.ndarray]] | None = []  # None once the pass outgrows the cache budget
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bench-images") as pool:
            for lo in range(0, len(self.paths), window):
                indices = range(lo, min(lo + window, len(self.paths)))
                tensors = list(pool.map(lambda i: self._tensor(i, perturbation, cfg), indices))
                ok = [i for i, t in zip(indices, tensors, strict=True) if t is not None]
                stacked = np.stack([t for t in tensors if t is not None]) if ok else np.empty((0,), np.float32)
                if kept is not None and ok:
                    kept.append((ok, stacked))
                    if sum(t.nbytes for _, t in kept) > self._budget - self._used:
                        kept = None
                yield ok, stacked, len(indices) - len(ok)
        if kept and self._reserve(sum(t.nbytes for _, t in kept)):
            self._tensors[(perturbation.name, cfg)] = (
                [i for ok, _ in kept for i in ok],
                np.concatenate([t for _, t in kept]),
            )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_preprocess(engine: Engine | TorchEngine) -> PreprocessConfig:
    """Preprocessing from the bundle the model file sits in (``onnx/..`` or its folder), else HF defaults."""
    import json

    model_path = Path(engine.model_path)
    for folder in (model_path.parent, model_path.parent.parent):
        cfg = folder / "preprocessor_config.json"
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{cfg} is not valid JSON ({exc}); fix or remove it") from exc
            try:
                return PreprocessConfig.from_json(data if isinstance(data, dict) else {}, engine.input.image_hw())
            except ConfigFieldError as exc:
                raise InputError(f"{cfg}: {exc}; fix the field or remove it (the default is then used)") from exc
    return PreprocessConfig.from_json({}, fallback_hw=engine.input.image_hw())


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be between 0 and 1 (a p(fake) cut-off), got {threshold}")


def add_agreement(cells: Sequence[CellResult], reference_variant: str, target_fpr: float | None = TRANSFER_FPR) -> None:
    """Fill each cell's ``accuracy.agreement`` from the stored predictions of the reference variant.

    The reference is the ``reference_variant`` cell of the same provider (and batch size, when there are
    several), else that variant's cell on any provider. Images are matched by path; a cell without a
    usable reference keeps ``agreement: null`` with ``reasons.agreement`` saying why. Each perturbed entry
    (``accuracy.perturbations``) is compared likewise with the reference's entry of the same perturbation.

    On a labelled set the agreement also holds the paired differences (:func:`paired_differences`: the accuracy
    drop and ΔAUC with their intervals over the common images, or their groups); None with the reason for the
    reference against itself or without labels.

    Then :func:`add_threshold_transfer` at ``target_fpr`` (None: not) and :func:`add_batch_flips`.
    """
    refs = [c for c in cells if c.variant == reference_variant and c.status == "ok" and _preds(c)]
    for cell in cells:
        acc = cell.accuracy
        if cell.status != "ok" or not isinstance(acc, dict) or not acc.get("predictions"):
            continue
        same_provider = [r for r in refs if r.provider == cell.provider]
        ranked = [r for r in same_provider if r.batch_size == cell.batch_size] + same_provider + refs
        ref = ranked[0] if ranked else None
        ref_acc: dict[str, Any] = dict(ref.accuracy or {}) if ref is not None else {}
        ref_entries = {e["perturbation"]: e for e in ref_acc.get("perturbations") or []}
        targets: list[tuple[Any, dict[str, Any] | None, str]] = [(acc, ref_acc if ref else None, "")]
        for entry in acc.get("perturbations") or []:
            name = entry["perturbation"]
            targets.append((entry, ref_entries.get(name), f" under {name}"))
        for target, ref_target, under in targets:
            target.setdefault("reasons", {})
            if ref is None:
                why = f"reference variant {reference_variant!r} has no evaluated cell in this run"
            elif ref_target is None:
                why = f"the reference {reference_variant}/{ref.provider} was not evaluated{under}"
            else:
                ref_p = {p["path"]: p["p_fake"] for p in ref_target.get("predictions") or []}
                pairs = [(ref_p[p["path"]], p["p_fake"]) for p in target["predictions"] if p["path"] in ref_p]
                why = f"no image in common with the reference {reference_variant}/{ref.provider}{under}"
                if pairs:
                    ref_arr, cur_arr = (np.array(col, dtype=np.float64) for col in zip(*pairs, strict=True))
                    found = agreement(reference_variant, ref_arr, cur_arr)
                    target["agreement"] = {**found, "reference_provider": ref.provider}
                    target["reasons"].pop("agreement", None)
                    common = [p for p in target["predictions"] if p["path"] in ref_p]
                    paired, undefined = _paired(
                        target, common, ref_arr, cur_arr, acc.get("positive_label"), ref is cell
                    )
                    target["agreement"].update(paired)
                    for key in PAIRED_KEYS:
                        target["reasons"].pop(key, None)
                    target["reasons"].update(undefined)
                    continue
            target["agreement"] = None
            target["reasons"]["agreement"] = why
    if target_fpr is not None:
        add_threshold_transfer(cells, reference_variant, target_fpr)
    add_batch_flips(cells, reference_variant)


def _reference_for(cell: CellResult, refs: Sequence[CellResult]) -> CellResult | None:
    """The reference cell a cell is compared with: same provider and batch, else same provider, else any."""
    same_provider = [r for r in refs if r.provider == cell.provider]
    ranked = [r for r in same_provider if r.batch_size == cell.batch_size] + same_provider + list(refs)
    return ranked[0] if ranked else None


def _labelled_scores(acc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(y, p(fake)) of a cell's clean predictions, or None when unlabelled."""
    preds = acc.get("predictions") or []
    positive = acc.get("positive_label")
    if not preds or positive is None or any(p.get("label") is None for p in preds):
        return None
    y = np.array([int(p["label"] == positive) for p in preds], dtype=np.int64)
    return y, np.array([p["p_fake"] for p in preds], dtype=np.float64)


def add_threshold_transfer(cells: Sequence[CellResult], reference_variant: str, target_fpr: float) -> None:
    """``accuracy.threshold_transfer`` of every evaluated cell: the threshold the reference variant needs for FPR ≤
    ``target_fpr`` on this set (bench.metrics.operating_point), applied to this variant's scores, with the FPR and
    TPR it then gives (Wilson intervals). A quantised variant's scores shift, so the threshold chosen once on the
    full-precision model gives it another FPR: this says how much. None with ``reasons.threshold_transfer``."""
    refs = [c for c in cells if c.variant == reference_variant and c.status == "ok" and _preds(c)]
    for cell in cells:
        acc = cast(dict[str, Any], cell.accuracy)
        if cell.status != "ok" or not isinstance(acc, dict) or not acc.get("predictions"):
            continue
        reasons = acc.setdefault("reasons", {})
        ref = _reference_for(cell, refs)
        mine = _labelled_scores(acc)
        theirs = _labelled_scores(dict(ref.accuracy or {})) if ref is not None else None
        if mine is None:
            why = "no labels: an FPR needs the real images to be known"
        elif ref is None or theirs is None:
            why = f"reference variant {reference_variant!r} has no labelled evaluation in this run"
        else:
            point = operating_point(theirs[0], theirs[1], target_fpr)
            if point is not None:
                acc["threshold_transfer"] = {
                    "reference": reference_variant,
                    "reference_provider": ref.provider,
                    "target_fpr": target_fpr,
                    "threshold": point["threshold"],
                    "reference_fpr": point["fpr"],
                    "reference_tpr": point["tpr"],
                    **rates_at(mine[0], mine[1], point["threshold"]),
                }
                reasons.pop("threshold_transfer", None)
                continue
            n_real = int((theirs[0] == 0).sum())
            why = f"FPR {target_fpr:g} needs at least {np.ceil(1 / target_fpr):.0f} real images; the set has {n_real}"
        acc["threshold_transfer"] = None
        reasons["threshold_transfer"] = why


def add_batch_flips(cells: Sequence[CellResult], reference_variant: str) -> None:
    """``accuracy.batch_flips``: at each batch size both a cell and its reference were evaluated at
    (``batch_p_fake``), the share of images whose decision differs from the reference's at the same batch, with its
    Wilson interval (dynamic quantisation computes its scales per batch: the flips depend on it)."""
    refs = [c for c in cells if c.variant == reference_variant and c.status == "ok" and _preds(c)]
    for cell in cells:
        acc = cast(dict[str, Any], cell.accuracy)
        if cell.status != "ok" or not isinstance(acc, dict) or not acc.get("batch_p_fake"):
            continue
        ref = _reference_for(cell, refs)
        ref_batches = ((ref.accuracy or {}).get("batch_p_fake") or {}) if ref is not None else {}
        threshold = float(acc.get("threshold") or 0.5)
        rows = []
        for size, p in sorted(acc["batch_p_fake"].items(), key=lambda kv: int(kv[0])):
            other = ref_batches.get(size)
            if other is None or len(other) != len(p):
                continue
            flips = int(((np.asarray(p) >= threshold) != (np.asarray(other) >= threshold)).sum())
            ci = wilson_interval(flips, len(p))
            rows.append(
                {
                    "batch_size": int(size),
                    "reference": reference_variant,
                    "n": len(p),
                    "flips": flips,
                    "flip_rate": flips / len(p),
                    "flip_rate_ci": None if ci is None else [ci[0], ci[1]],
                }
            )
        acc["batch_flips"] = rows


PAIRED_KEYS = ("accuracy_drop_pt", "accuracy_drop_pt_ci", "discordant", "roc_auc_delta", "roc_auc_delta_ci")


def _paired(
    target: dict[str, Any],
    common: list[Prediction],
    ref_p: np.ndarray,
    cur_p: np.ndarray,
    positive_label: str | None,
    itself: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The paired differences against the reference on the ``common`` images (in the order of ``ref_p``/``cur_p``),
    or None for each: without a reason for the reference itself (there is nothing to differ), with one on an
    unlabelled set."""
    if itself:
        return dict.fromkeys(PAIRED_KEYS), {}
    if positive_label is None or any(p.get("label") is None for p in common):
        why = "no labels: the difference in accuracy needs a labelled set"
        return dict.fromkeys(PAIRED_KEYS), {"accuracy_drop_pt": why, "roc_auc_delta": why}
    y = np.array([int(p.get("label") == positive_label) for p in common], dtype=np.int64)
    groups = [str(p["group"]) for p in common] if all("group" in p for p in common) else None
    threshold = target.get("threshold")
    return paired_differences(y, ref_p, cur_p, 0.5 if threshold is None else float(threshold), groups)


def _preds(cell: CellResult) -> list[Prediction]:
    return (cell.accuracy or {}).get("predictions") or []


@dataclass(frozen=True)
class EvalSpec:
    """How accuracy is evaluated: on which labelled set, at which threshold, which class is fake, under which
    perturbations (bench.perturb specs); ``dataset=None`` evaluates nothing."""

    dataset: Path | None = setting(
        None, flag="", help="Labelled set (each command words its own --dataset).", role="record"
    )  # a resumed run compares the data set's fingerprint instead
    threshold: float | None = setting(
        None,
        flag="--threshold",
        help="Predict fake when p(fake) ≥ T (default: argmax, i.e. 0.5 for two classes).",
        role="measure",
        minimum=0,
        maximum=1,
    )
    positive_label: str | None = setting(
        None,
        flag="--positive-label",
        help="The fake class by id2label name or index (default: by name).",
        role="measure",
    )
    strict: bool = setting(
        False,
        flag="--strict",
        is_flag=True,
        help="Fail (exit 2) on an unreadable image or a missing manifest file instead of skipping and listing it.",
        role="record",
    )
    perturbations: tuple[str, ...] = setting(
        (),
        flag="",
        help="bench.perturb names evaluated besides the clean images (the CLI's --perturb).",
        role="measure",
    )

    def __post_init__(self) -> None:
        check(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for a matrix cell's process (``bench._cell``); :meth:`from_dict` rebuilds it."""
        return {
            "dataset": str(self.dataset),
            "threshold": self.threshold,
            "positive_label": self.positive_label,
            "strict": self.strict,
            "perturb": list(self.perturbations),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSpec:
        return cls(
            dataset=Path(data["dataset"]),
            threshold=data.get("threshold"),
            positive_label=data.get("positive_label"),
            strict=data.get("strict", False),
            perturbations=tuple(data.get("perturb") or ()),
        )


class Evaluator:
    """Accuracy of open engines on one labelled set: the one evaluator of ``bench eval``, matrix cells and ``bench ab``.

    Made once per run and bundle (perturbations parsed once, the fake class found once per label set), then
    called with each engine. ``source`` shares decoded images between the engines of a run (:class:`ImageSource`).
    """

    def __init__(
        self,
        bundle: Bundle,
        labelled: LabelledSet,
        spec: EvalSpec = EvalSpec(),
        *,
        batch_size: int = 32,
        source: ImageSource | None = None,
        flip_batch_sizes: Sequence[int] = (),
    ) -> None:
        self.bundle = bundle
        self.flip_batch_sizes = tuple(flip_batch_sizes)
        self.labelled = labelled
        self.spec = spec
        self.threshold = 0.5 if spec.threshold is None else float(spec.threshold)
        self.perturbations = parse_perturbations(spec.perturbations) if spec.perturbations else []
        self.batch_size = batch_size
        self.source = source
        self._targets: dict[tuple[tuple[int, str], ...], tuple[int | None, str | None]] = {}

    def labels(self, engine: Engine | TorchEngine) -> dict[int, str]:
        """The model's labels: config.json's id2label, else "0".."k-1" from the engine's output width."""
        return self.bundle.labels(engine.num_classes)

    def target(self, labels: dict[int, str]) -> tuple[int | None, str | None]:
        """The fake class's index in ``labels``, or None and why; a dataset label that maps to no model label
        is an InputError here, before anything is evaluated."""
        key = tuple(sorted(labels.items()))
        if key not in self._targets:
            positive, why = positive_index(labels, self.spec.positive_label)
            if positive is not None:
                self.labelled.indexed(labels, positive)
            self._targets[key] = (positive, why)
        return self._targets[key]

    def __call__(
        self, engine: Engine | TorchEngine, labels: dict[int, str] | None = None, progress: AdvanceFn | None = None
    ) -> Accuracy:
        """The ``accuracy`` object of ``engine`` (:func:`evaluate_engine`); ``labels`` default to :meth:`labels`."""
        labels = self.labels(engine) if labels is None else labels
        positive, _why = self.target(labels)
        return evaluate_engine(
            engine,
            self.labelled,
            labels,
            positive,
            self.threshold,
            self.batch_size,
            progress,
            self.spec.strict,
            preprocess=self.bundle.preprocess_config(engine.input.image_hw()),
            perturbations=self.perturbations,
            source=self.source,
            flip_batch_sizes=self.flip_batch_sizes,
        )


def labelled_set_evaluator(bundle: Bundle, spec: dict[str, Any], batch_size: int) -> Evaluator:
    """A matrix cell's evaluator, from the ``evaluate`` object of its process spec (:meth:`EvalSpec.to_dict`)."""
    evaluation = EvalSpec.from_dict(spec)
    labelled = load_labelled_set(spec["dataset"], strict=evaluation.strict)
    return Evaluator(bundle, labelled, evaluation, batch_size=batch_size)


def evaluate_cell(
    model_path: Path,
    variant: str,
    provider: str,
    evaluator: Evaluator,
    labels: dict[int, str],
    session: SessionSpec | None = None,
    progress: AdvanceFn | None = None,
) -> CellResult:
    """One variant × provider evaluated into a CellResult (``bench eval``); provider trouble becomes its status."""
    cell = CellResult(variant=variant, provider=provider, batch_size=evaluator.batch_size)
    cell.model = model_info(model_path)
    try:
        engine = open_engine(model_path, variant, provider, session)
        cell.session_create_ms = round(engine.session_create_ms, 3)
        cell.providers_effective = engine.providers_effective
        cell.batch_size = engine.input.fixed_batch or evaluator.batch_size
        cell.accuracy = evaluator(engine, labels, progress)
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: the cell says why, the run goes on
        cell.status, cell.reason = cell_failure(exc, provider)
    return cell
