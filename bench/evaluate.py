"""Evaluate variants on a labelled set: batched inference through the Engine, metrics, agreement.

The ``accuracy`` object of a cell (results contract) is built here and nowhere else, so ``bench eval``,
``bench matrix`` and the reports agree on it. Images that do not decode are skipped and listed with the
reason (``strict=True``: an InputError instead); an evaluation in which no image decodes is an InputError.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.bundle import Bundle, positive_index
from bench.datasets import LabelledSet, load_labelled_set
from bench.engine import Engine, SessionSpec, cell_failure
from bench.errors import InputError
from bench.metrics import agreement, binary_metrics, decide, unlabelled_metrics
from bench.modelfile import model_info
from bench.preprocess import ImageError, PreprocessConfig, load_image, to_tensor
from bench.results import CellResult

AdvanceFn = Callable[[int], None]
StartFn = Callable[[str, int], AdvanceFn]
LogFn = Callable[[str], None]
_ADDRESS = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")  # Pillow names the BytesIO: keep results diffable


def evaluate_engine(
    engine: Engine,
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
) -> dict[str, Any]:
    """The results contract's ``accuracy`` object for ``engine`` on ``items``.

    ``items`` is a LabelledSet (its labels are mapped with ``label_mapping``, its root and skipped rows
    used) or [(path, true label index)]; a None index marks an unlabelled set: predictions only, metrics
    None with the reason "no labels". ``preprocess`` defaults to the ``preprocessor_config.json`` next to
    the model file (``onnx/..`` or its own folder), else Hugging Face ViT defaults at the model's input
    size. Paths in ``predictions``/``skipped`` are relative to ``root`` when given. ``skipped`` (e.g.
    manifest rows whose file is missing) is listed first.
    """
    if positive_index is None:
        raise InputError("no positive (fake) class: pass --positive-label NAME|INDEX to evaluate accuracy")
    if isinstance(items, LabelledSet):
        root = items.root if root is None else root
        skipped = [*items.skipped, *skipped]
        items = items.indexed(labels, positive_index)
    check_threshold(threshold)
    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    fixed = engine.input.fixed_batch
    batch_size = fixed or batch_size
    cfg = preprocess or default_preprocess(engine)
    labelled = bool(items) and all(idx is not None for _, idx in items)

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else str(path)

    skip: list[dict[str, str]] = [dict(s) for s in skipped]
    done_paths: list[str] = []
    done_truth: list[int | None] = []
    probs: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    infer_s = 0.0
    start = time.perf_counter()

    def flush() -> None:
        nonlocal infer_s
        if not pending:
            return
        x = np.stack(pending)
        if fixed and len(pending) < fixed:  # a model with a fixed batch axis: pad the last batch, drop the pad
            x = np.concatenate([x, np.repeat(x[-1:], fixed - len(pending), axis=0)])
        if not probs:  # one untimed call first: ORT's lazy set-up would otherwise dominate a small set's img/s
            engine.predict_proba(x)
        t0 = time.perf_counter()
        out = engine.predict_proba(x)
        infer_s += time.perf_counter() - t0
        probs.append(np.asarray(out, dtype=np.float64)[: len(pending)])
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for path, idx in items:
        try:
            tensor = to_tensor(load_image(path), cfg)
        except ImageError as exc:
            if strict:
                raise InputError(f"{rel(path)}: {exc}; fix or remove the file, or drop --strict to skip it") from exc
            skip.append({"path": rel(path), "reason": f"{exc.kind}: {_ADDRESS.sub('', str(exc))}"})
            if progress is not None:
                progress(1)
            continue
        pending.append(tensor)
        done_paths.append(rel(path))
        done_truth.append(idx)
        if len(pending) == batch_size:
            flush()
    flush()
    wall_s = time.perf_counter() - start

    if not done_paths:
        first = f" (first: {skip[0]['path']}: {skip[0]['reason']})" if skip else ""
        raise InputError(f"no image could be evaluated: {len(skip)} skipped{first}; check the dataset")
    matrix = np.concatenate(probs)
    if matrix.ndim != 2 or (labels and matrix.shape[1] != len(labels)):
        raise InputError(
            f"{engine.model_path.name} outputs shape {list(matrix.shape)} but config.json names "
            f"{len(labels)} labels; the model and its config.json do not match"
        )
    if not 0 <= positive_index < matrix.shape[1]:
        raise InputError(f"positive label index {positive_index} is outside the model's {matrix.shape[1]} classes")
    p_fake = matrix[:, positive_index]
    pred_idx = decide(matrix, positive_index, threshold)

    def name(i: int | None) -> str | None:
        return None if i is None else labels.get(i, str(i))

    if labelled:
        y = np.array([int(i == positive_index) for i in done_truth], dtype=np.int64)
        metrics = binary_metrics(y, p_fake, threshold)
    else:
        metrics = unlabelled_metrics(len(done_paths), threshold)
    result: dict[str, Any] = {
        "n": len(done_paths),
        "skipped": skip,
        "positive_label": name(positive_index),
        **{k: v for k, v in metrics.items() if k != "n"},
        "agreement": None,
        "images_per_s": round(len(done_paths) / infer_s, 3) if infer_s > 0 else None,
        "wall_s": round(wall_s, 4),
        "batch_size": batch_size,
        "predictions": [
            {"path": p, "p_fake": float(pf), "label": name(t), "pred": name(int(pi))}
            for p, pf, t, pi in zip(done_paths, p_fake, done_truth, pred_idx, strict=True)
        ],
    }
    return result


def default_preprocess(engine: Engine) -> PreprocessConfig:
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
            return PreprocessConfig.from_json(data if isinstance(data, dict) else {}, engine.input.image_hw())
    return PreprocessConfig.from_json({}, fallback_hw=engine.input.image_hw())


def check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be between 0 and 1 (a p(fake) cut-off), got {threshold}")


def add_agreement(cells: Sequence[CellResult], reference_variant: str) -> None:
    """Fill each cell's ``accuracy.agreement`` from the stored predictions of the reference variant.

    The reference is the ``reference_variant`` cell of the same provider (and batch size, when there are
    several), else that variant's cell on any provider. Images are matched by path; a cell without a
    usable reference keeps ``agreement: null`` with ``reasons.agreement`` saying why.
    """
    refs = [c for c in cells if c.variant == reference_variant and c.status == "ok" and _preds(c)]
    for cell in cells:
        acc = cell.accuracy
        if cell.status != "ok" or not isinstance(acc, dict) or not acc.get("predictions"):
            continue
        acc.setdefault("reasons", {})
        same_provider = [r for r in refs if r.provider == cell.provider]
        ranked = [r for r in same_provider if r.batch_size == cell.batch_size] + same_provider + refs
        if not ranked:
            acc["agreement"] = None
            acc["reasons"]["agreement"] = f"reference variant {reference_variant!r} has no evaluated cell in this run"
            continue
        ref = ranked[0]
        ref_p = {p["path"]: p["p_fake"] for p in _preds(ref)}
        pairs = [(ref_p[p["path"]], p["p_fake"]) for p in acc["predictions"] if p["path"] in ref_p]
        if not pairs:
            acc["agreement"] = None
            acc["reasons"]["agreement"] = f"no image in common with the reference {reference_variant}/{ref.provider}"
            continue
        ref_arr, cur_arr = (np.array(col, dtype=np.float64) for col in zip(*pairs, strict=True))
        acc["agreement"] = {**agreement(reference_variant, ref_arr, cur_arr), "reference_provider": ref.provider}
        acc["reasons"].pop("agreement", None)


def _preds(cell: CellResult) -> list[dict[str, Any]]:
    return (cell.accuracy or {}).get("predictions") or []


def evaluate_cell(
    model_path: Path,
    variant: str,
    provider: str,
    items: Sequence[tuple[Path, int | None]],
    labels: dict[int, str],
    positive_index: int,
    *,
    preprocess: Callable[[Engine], PreprocessConfig],
    threshold: float = 0.5,
    batch_size: int = 32,
    strict: bool = False,
    root: Path | None = None,
    skipped: Sequence[dict[str, str]] = (),
    session: SessionSpec | None = None,
    progress: AdvanceFn | None = None,
) -> CellResult:
    """One variant × provider evaluated into a CellResult; provider trouble becomes the cell's status.

    ``preprocess`` maps the open Engine to its PreprocessConfig (e.g.
    ``lambda e: bundle.preprocess_config(e.input.image_hw())``).
    """
    cell = CellResult(variant=variant, provider=provider, batch_size=batch_size)
    cell.model = model_info(model_path)
    try:
        engine = Engine(model_path, provider, session)
        cell.session_create_ms = round(engine.session_create_ms, 3)
        cell.providers_effective = engine.providers_effective
        cell.batch_size = engine.input.fixed_batch or batch_size
        cell.accuracy = evaluate_engine(
            engine,
            items,
            labels,
            positive_index,
            threshold,
            batch_size,
            progress,
            strict,
            preprocess=preprocess(engine),
            root=root,
            skipped=skipped,
        )
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: the cell says why, the run goes on
        cell.status, cell.reason = cell_failure(exc, provider)
    return cell


def labelled_set_evaluator(bundle: Bundle, spec: dict[str, Any], batch_size: int) -> Callable[[Engine], dict[str, Any]]:
    """``evaluate(engine)`` for a matrix cell: accuracy of the engine on the labelled set ``spec`` names."""
    labelled = load_labelled_set(spec["dataset"], strict=spec.get("strict", False))

    def run(engine: Engine) -> dict[str, Any]:
        labels = bundle.labels(engine.num_classes)
        positive, _why = positive_index(labels, spec.get("positive_label"))
        threshold = 0.5 if spec.get("threshold") is None else float(spec["threshold"])
        preprocess = bundle.preprocess_config(engine.input.image_hw())
        return evaluate_engine(
            engine,
            labelled,
            labels,
            positive,
            threshold,
            batch_size,
            strict=spec.get("strict", False),
            preprocess=preprocess,
        )

    return run
