"""What ``bench run`` and ``bench eval`` do, as library functions: resolve variants, measure, collect a RunResult.

The CLI only parses flags and prints; these functions hold the command's orchestration so tests and
other tools can call them directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from bench import datasets, environment
from bench.audit import with_audit
from bench.bundle import Bundle, is_pytorch_variant
from bench.datasets import LabelledSet
from bench.engine import SessionSpec
from bench.errors import InputError
from bench.evaluate import (
    CACHE_BYTES,
    TRANSFER_FPR,
    EvalSpec,
    Evaluator,
    ImageSource,
    LogFn,
    StartFn,
    add_agreement,
    check_threshold,
    evaluate_cell,
)
from bench.modelfile import output_width
from bench.perturb import DEFAULT_SEED
from bench.providers import is_gpu
from bench.results import CellResult, Environment, RunConfig, RunResult
from bench.runner import ProgressFn, RunOptions, fit_threads, image_feed, measure_cell
from bench.variants import ensure_variant


def run_cells(
    bundle: Bundle,
    variants: Sequence[str],
    providers: Sequence[str],
    options: RunOptions,
    dataset: Path | None = None,
    allow_build: bool = True,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> RunResult:
    """Measure each variant × provider in this process (``bench run``); returns a RunResult.

    Without ``--threads``, on a CPU whose other processes hold cores ORT's threads would need, the cells are
    measured with fewer threads (bench.runner.fit_threads: said on ``log``, recorded as config.threads_why).
    """
    paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in variants}
    threads_why = None
    cpu = next((p for p in providers if not is_gpu(p)), None)
    if cpu is not None:
        options, threads_why = fit_threads(cpu, options, log, command="run", measured="the cells were")
    images: list[Path] = datasets.image_files(dataset) if dataset is not None else []
    if dataset is not None and not images:
        raise InputError(f"dataset {dataset} holds no images")
    result = RunResult(
        environment=cast(Environment, environment.fingerprint(options.session.provider_options.device_id)),
        config=cast(
            RunConfig,
            {
                "command": "run",
                "model_dir": str(bundle.root),
                "variants": list(variants),
                "providers": list(providers),
                **options.as_config(),
                **({"threads_why": threads_why} if threads_why else {}),
            },
        ),
        dataset=datasets.fingerprint(dataset, [(p, None) for p in images]) if dataset is not None else None,
    )
    skipped: list[str] = []  # timed-input images that do not decode: skipped and listed, as bench eval does
    feed = image_feed(images, options.batch_size, bundle, skipped) if images else None
    for variant in variants:
        for provider in providers:
            tick = progress(f"{variant}/{provider}", options.loop.iterations) if progress else None
            result.cells.append(
                measure_cell(
                    paths[variant],
                    variant,
                    provider,
                    options,
                    input_batch=feed,
                    progress=_per_call(tick) if tick else None,
                )
            )
    if skipped and log:
        log(f"skipped {len(skipped)} image(s) of the timed input: " + "; ".join(skipped[:5]))
    return result


def _per_call(tick: Callable[[int], Any]) -> ProgressFn:
    """measure_cell's progress (calls done, their median ms) as a tick of calls done."""

    def advance(n: int, _ms: float) -> None:
        tick(n)

    return advance


def default_reference(reference: str | None, variants: Sequence[str]) -> str | None:
    """``bench eval --reference``: fp32 when several variants including fp32 are evaluated; "none" turns it off."""
    if reference is None and len(variants) > 1 and "fp32" in variants:
        return "fp32"
    if reference is not None and reference.strip().lower() in ("", "none"):
        return None
    return reference


def run_eval(
    bundle: Bundle,
    variants: Sequence[str],
    providers: Sequence[str],
    dataset: LabelledSet,
    *,
    reference: str | None = None,
    positive_label: str | None = None,
    threshold: float = 0.5,
    batch_size: int = 32,
    strict: bool = False,
    allow_build: bool = True,
    session: SessionSpec | None = None,
    log: LogFn | None = None,
    progress: StartFn | None = None,
    perturb: Sequence[str] = (),
    threshold_at_fpr: float | None = TRANSFER_FPR,
    flip_batch_sizes: Sequence[int] = (),
    audit: bool = True,
) -> RunResult:
    """``bench eval``: every variant × provider on ``dataset`` (a LabelledSet), plus agreement; a RunResult.

    ``perturb`` (``--perturb`` specs, bench.perturb) evaluates each cell under those perturbations too
    (``accuracy.perturbations``); images are decoded once and shared by every cell of the run.
    The reference variant is evaluated too when it is not among ``variants``. When no label is the fake
    class (and no ``positive_label`` says which), every cell is ``unavailable`` with that reason; a
    ``positive_label`` that names no label is an InputError.

    ``threshold_at_fpr``: the threshold transfer's target FPR (bench.evaluate.add_threshold_transfer; None: off);
    ``flip_batch_sizes``: the batches the decisions are compared with the reference's at (the service's);
    ``audit``: the shortcut audit of the set (bench.audit) in ``dataset.audit``, its warning on ``log``.
    """
    check_threshold(threshold)
    if batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")
    session = session or SessionSpec()
    spec = EvalSpec(dataset.root, threshold, positive_label, strict, perturbations=tuple(perturb))
    source = ImageSource([item.path for item in dataset.items], cache_bytes=CACHE_BYTES)
    evaluator = Evaluator(
        bundle, dataset, spec, batch_size=batch_size, source=source, flip_batch_sizes=flip_batch_sizes
    )
    names = list(dict.fromkeys([*variants, *([reference] if reference else [])]))
    for warning in dataset.warnings:
        if log:
            log(f"warning: {warning}")

    def target(labels: dict[int, str]) -> tuple[int | None, str | None]:
        """The fake class's index (or why none); a --positive-label that names no label is an input error."""
        pos, why = evaluator.target(labels)
        if pos is None and positive_label not in (None, ""):
            raise InputError(why or f"--positive-label {positive_label!r} matches no label")
        return pos, why

    if bundle.labels():  # check the label mapping before building or loading anything
        target(bundle.labels())
    paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in names}
    result = RunResult(
        environment=cast(Environment, environment.fingerprint(session.provider_options.device_id)),
        config={
            "command": "eval",
            "model_dir": str(bundle.root),
            "variants": names,
            "providers": list(providers),
            "dataset": str(dataset.root),
            "dataset_kind": dataset.kind,
            "reference": reference,
            "positive_label": positive_label,
            "threshold": threshold,
            "batch_size": batch_size,
            "strict": strict,
            "threads": session.threads,
            "graph_opt": session.graph_opt,
            "device_id": session.provider_options.device_id,
            "perturbations": [p.name for p in evaluator.perturbations],
            "perturb_seed": DEFAULT_SEED,
            "threshold_at_fpr": threshold_at_fpr,
            "flip_batch_sizes": sorted({batch_size, *flip_batch_sizes}) if flip_batch_sizes else [],
        },
        dataset=with_audit(dataset, log, *_model_target(bundle, evaluator)) if audit else dataset.fingerprint(),
    )
    for variant in names:
        for provider in providers:
            labels = bundle.labels() or (
                bundle.pytorch_labels() if is_pytorch_variant(variant) else bundle.labels(output_width(paths[variant]))
            )
            pos, why = target(labels)
            if pos is None:
                result.cells.append(
                    CellResult.not_run(variant, provider, batch_size, "unavailable", f"accuracy unavailable: {why}")
                )
                continue
            passes = max(1, len(evaluator.perturbations))
            advance = progress(f"{variant}/{provider}", len(dataset.items) * passes) if progress else None
            result.cells.append(evaluate_cell(paths[variant], variant, provider, evaluator, labels, session, advance))
    if reference:
        add_agreement(result.cells, reference, threshold_at_fpr)
    return result


def _model_target(bundle: Bundle, evaluator: Evaluator) -> tuple[dict[int, str] | None, int | None]:
    """The model's labels and fake class for the shortcut audit, when config.json names them."""
    labels = bundle.labels()
    return (labels, evaluator.target(labels)[0]) if labels else (None, None)


__all__ = ["default_reference", "run_cells", "run_eval"]
