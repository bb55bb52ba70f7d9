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

from bench.datasets import LabelledSet
from bench.errors import InputError
from bench.metrics import agreement, binary_metrics, decide, unlabelled_metrics
from bench.preprocess import ImageError, PreprocessConfig, load_image, to_tensor
from bench.results import CellResult

AdvanceFn = Callable[[int], None]
StartFn = Callable[[str, int], AdvanceFn]
LogFn = Callable[[str], None]
_ADDRESS = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")  # Pillow names the BytesIO: keep results diffable


def evaluate_engine(
    engine: Any,
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
        raise InputError(f"{engine.model_path.name} outputs shape {list(matrix.shape)} but config.json names "
                         f"{len(labels)} labels; the model and its config.json do not match")
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


def default_preprocess(engine: Any) -> PreprocessConfig:
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
        ranked = ([r for r in same_provider if r.batch_size == cell.batch_size] + same_provider + refs)
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
    preprocess: Callable[[Any], PreprocessConfig],
    threshold: float = 0.5,
    batch_size: int = 32,
    strict: bool = False,
    root: Path | None = None,
    skipped: Sequence[dict[str, str]] = (),
    session: Any = None,
    progress: AdvanceFn | None = None,
) -> CellResult:
    """One variant × provider evaluated into a CellResult; provider trouble becomes the cell's status.

    ``preprocess`` maps the open Engine to its PreprocessConfig (e.g.
    ``lambda e: bundle.preprocess_config(e.input.image_hw())``).
    """
    from bench.engine import Engine, ModelLoadError, ProviderUnavailable, first_line
    from bench.runner import model_info

    cell = CellResult(variant=variant, provider=provider, batch_size=batch_size)
    cell.model = model_info(model_path)
    try:
        engine = Engine(model_path, provider, session)
        cell.session_create_ms = round(engine.session_create_ms, 3)
        cell.providers_effective = engine.providers_effective
        cell.batch_size = engine.input.fixed_batch or batch_size
        cell.accuracy = evaluate_engine(engine, items, labels, positive_index, threshold, batch_size, progress,
                                        strict, preprocess=preprocess(engine), root=root, skipped=skipped)
    except (ProviderUnavailable, ModelLoadError) as exc:
        cell.status, cell.reason = "unavailable", str(exc)
    except InputError:
        raise
    except Exception as exc:  # an inference that throws: the cell failed, the run goes on
        cell.status, cell.reason = "failed", f"{provider}: inference failed — {first_line(exc)}"
    return cell


def run_eval(
    bundle: Any,
    variants: Sequence[str],
    providers: Sequence[str],
    dataset: Any,
    *,
    reference: str | None = None,
    positive_label: str | None = None,
    threshold: float = 0.5,
    batch_size: int = 32,
    strict: bool = False,
    allow_build: bool = True,
    session: Any = None,
    log: LogFn | None = None,
    progress: StartFn | None = None,
) -> Any:
    """``bench eval``: every variant × provider on ``dataset`` (a LabelledSet), plus agreement; a RunResult.

    The reference variant is evaluated too when it is not among ``variants``. When no label is the fake
    class (and no ``positive_label`` says which), every cell is ``unavailable`` with that reason; a
    ``positive_label`` that names no label is an InputError.
    """
    from bench import environment
    from bench.bundle import positive_index
    from bench.engine import SessionSpec
    from bench.results import RunResult
    from bench.variants import ensure_variant

    check_threshold(threshold)
    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    session = session or SessionSpec()
    names = list(dict.fromkeys([*variants, *([reference] if reference else [])]))
    for warning in dataset.warnings:
        if log:
            log(f"warning: {warning}")
    targets: dict[str, Any] = {}

    def resolve(labels: dict[int, str]) -> tuple[int | None, str | None]:
        """Positive index (or why none) and the (path, index) items, once per label set."""
        key = tuple(sorted(labels.items()))
        if key not in targets:
            pos, why = positive_index(labels, positive_label)
            if pos is None and positive_label not in (None, ""):
                raise InputError(why or f"--positive-label {positive_label!r} matches no label")
            targets[key] = (pos, why, dataset.indexed(labels, pos) if pos is not None else None)
        return targets[key]

    if bundle.labels():  # check the label mapping before building or loading anything
        resolve(bundle.labels())
    paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in names}
    result = RunResult(
        environment=environment.fingerprint(session.provider_options.device_id),
        config={"command": "eval", "model_dir": str(bundle.root), "variants": names, "providers": list(providers),
                "dataset": str(dataset.root), "dataset_kind": dataset.kind, "reference": reference,
                "positive_label": positive_label, "threshold": threshold, "batch_size": batch_size,
                "strict": strict, "threads": session.threads, "graph_opt": session.graph_opt,
                "device_id": session.provider_options.device_id},
        dataset=dataset.fingerprint(),
    )
    for variant in names:
        for provider in providers:
            labels = bundle.labels() or bundle.labels(_output_width(paths[variant]))
            pos, why, items = resolve(labels)
            if pos is None:
                result.cells.append(CellResult.not_run(variant, provider, batch_size, "unavailable",
                                                       f"accuracy unavailable: {why}"))
                continue
            advance = progress(f"{variant}/{provider}", len(items)) if progress else None
            cell = evaluate_cell(paths[variant], variant, provider, items, labels, pos,
                                 preprocess=lambda e: bundle.preprocess_config(e.input.image_hw()),
                                 threshold=threshold, batch_size=batch_size, strict=strict, root=dataset.root,
                                 skipped=dataset.skipped, session=session, progress=advance)
            result.cells.append(cell)
    if reference:
        add_agreement(result.cells, reference)
    return result


def _output_width(model_path: Path) -> int | None:
    """Number of classes from the graph's first output (for a bare folder of .onnx files without labels)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    last = dims[-1].dim_value if dims else 0
    return int(last) or None


def accuracy_table(cells: Sequence[CellResult], title: str | None = None) -> Any:
    """A rich Table: one row per cell with the headline accuracy figures, agreement and images/s."""
    from rich.table import Table

    from bench.console import fmt

    table = Table(title=title)
    for name in ("variant", "provider", "n", "skipped", "accuracy", "bal. acc", "F1", "AUC", "EER", "log loss",
                 "ECE", "flip rate", "mean |Δp|", "img/s"):
        table.add_column(name, justify="left" if name in ("variant", "provider") else "right")
    for c in cells:
        a = c.accuracy or {}
        if c.status != "ok":
            table.add_row(c.variant, c.provider, f"[red]{c.status}[/]: {c.reason}", *[""] * 11)
            continue
        agree = a.get("agreement") or {}

        def pct(v: float | None) -> str:
            return "—" if v is None else f"{v * 100:.2f}%"

        table.add_row(
            c.variant, c.provider, fmt(a.get("n")), fmt(len(a.get("skipped") or [])),
            pct(a.get("accuracy")), pct(a.get("balanced_accuracy")), fmt(a.get("f1"), 4), fmt(a.get("roc_auc"), 4),
            pct(a.get("eer")), fmt(a.get("log_loss"), 4), fmt(a.get("ece"), 4),
            pct(agree.get("flip_rate")), fmt(agree.get("mean_abs_dp"), 4), fmt(a.get("images_per_s"), 1),
        )
    return table


def footnotes(cells: Sequence[CellResult]) -> list[str]:
    """Lines under the table: the reference and decision rule, why figures are missing, what was skipped."""
    lines: list[str] = []
    why_cells: dict[str, tuple[dict[str, None], dict[str, None]]] = {}  # reason → (fields, cells), ordered
    for c in cells:
        a = c.accuracy or {}
        agree = a.get("agreement")
        if agree and not any(line.startswith("agreement vs") for line in lines):
            lines.append(f"agreement vs {agree['reference']} (same provider when evaluated there); "
                         f"positive class: {a.get('positive_label')}, threshold p(fake) ≥ {a.get('threshold')}")
        for field_name, why in (a.get("reasons") or {}).items():
            fields, where = why_cells.setdefault(why, ({}, {}))
            fields[field_name] = None
            where[f"{c.variant}/{c.provider}"] = None
    for why, (fields, where) in why_cells.items():
        lines.append(f"— {', '.join(fields)} null: {why} ({', '.join(where)})")
    first = next((c.accuracy for c in cells if c.accuracy and c.accuracy.get("skipped")), None)
    if first:
        skipped = first["skipped"]
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        lines.append(f"skipped {len(skipped)}: {shown}" + (" …" if len(skipped) > 5 else ""))
    return lines
