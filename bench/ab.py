"""``bench ab``: two model files (or two variants) measured alternately in blocks in one process.

Cross-run noise on a shared machine is large (one process's median can be 2× another's), so the
release gate measures both sides in the same process, interleaved: block ``i`` runs the current side
first when ``i`` is even and the baseline first when odd (ABBA…), so drift, thermal state and
neighbours' load fall on both sides alike. Latency comes from those interleaved blocks; memory from a
short run of each side in its own fresh process (RSS is per process, and both sessions live in this
one); the verdicts are :func:`bench.compare.compare_runs`'.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import datasets, environment
from bench._cell import cell_spec, run_cell_process
from bench.bundle import Bundle, positive_index, resolve_model_dir
from bench.compare import CompareResult, Tolerances, compare_runs
from bench.engine import Engine, ModelLoadError, ProviderUnavailable, cell_failure
from bench.errors import InputError
from bench.evaluate import evaluate_engine
from bench.modelfile import model_info
from bench.providers import parse_providers
from bench.results import CellResult, RunResult
from bench.runner import RunOptions, images_batch
from bench.sampling import ResourceSampler
from bench.timing import LatencyStats, LoopSpec, timed_loop
from bench.variants import ensure_variant

LogFn = Callable[[str], None]
MEMORY_TIMEOUT_S = 300.0  # a memory run that hangs longer is recorded as failed, not waited on forever
SETTLE_CALLS = 2  # untimed calls after each switch of session, so a block does not time the other side's cache


@dataclass(frozen=True)
class AbSide:
    """One side of an A/B: a model file and where it came from."""

    model_path: Path
    variant: str
    model_dir: Path

    @property
    def label(self) -> str:
        return f"{self.model_dir} [{self.variant}]"


def block_orders(blocks: int) -> list[tuple[int, int]]:
    """Side order per block: (0, 1), (1, 0), (0, 1), … — ABBA, so neither side always runs first."""
    return [(0, 1) if i % 2 == 0 else (1, 0) for i in range(blocks)]


def measure_ab(
    current: AbSide,
    baseline: AbSide,
    provider: str,
    options: RunOptions,
    blocks: int = 10,
    input_batch: Callable[[Any, AbSide], np.ndarray] | None = None,
    evaluate: Callable[[Any, AbSide], dict[str, Any] | None] | None = None,
    isolated_memory: bool = True,
    dataset: dict[str, Any] | None = None,
    log: LogFn | None = None,
) -> tuple[RunResult, RunResult]:
    """Measure both sides interleaved; returns (baseline RunResult, current RunResult), one cell each.

    ``options.loop.iterations`` is the number of timed calls per side, spread over ``blocks`` blocks
    (rounded up to whole blocks); ``min_time_s``, when set, is per side too.
    """
    if blocks < 1:
        raise InputError(f"--blocks must be ≥ 1, got {blocks}")
    sides = (current, baseline)
    per_block = math.ceil(options.loop.iterations / blocks)
    block_spec = LoopSpec(
        iterations=per_block,
        warmup=min(SETTLE_CALLS, options.loop.warmup),
        min_time_s=options.loop.min_time_s / blocks if options.loop.min_time_s else None,
    )
    env = environment.fingerprint(options.session.provider_options.device_id)
    cells = [CellResult(variant=s.variant, provider=provider, batch_size=options.batch_size) for s in sides]
    for cell, side in zip(cells, sides, strict=True):
        cell.model = model_info(side.model_path)

    engines: list[Any] = [None, None]
    calls: list[Callable[[], Any] | None] = [None, None]
    for i, side in enumerate(sides):
        try:
            engine = Engine(side.model_path, provider, options.session)
        except (ProviderUnavailable, ModelLoadError) as exc:
            cells[i].status, cells[i].reason = cell_failure(exc, provider)
            continue
        engines[i] = engine
        cells[i].session_create_ms = round(engine.session_create_ms, 3)
        cells[i].providers_effective = engine.providers_effective
        batch = input_batch(engine, side) if input_batch else engine.random_batch(options.batch_size, options.seed)
        engine.check_batch_size(batch.shape[0])
        use_binding = engine.io_binding_default if options.io_binding is None else options.io_binding
        cells[i].io_binding = use_binding
        calls[i] = engine.timed_call(batch, io_binding=use_binding)

    samples: list[list[float]] = [[], []]
    live = [i for i in (0, 1) if calls[i] is not None]
    if log and live:
        log(
            f"ab: {blocks} blocks × {per_block} calls per side, order ABBA… (A = {current.label}, B = {baseline.label})"
        )

    def step(i: int, spec: LoopSpec) -> list[float]:
        try:
            return timed_loop(calls[i], spec)  # type: ignore[arg-type]
        except Exception as exc:  # an inference that throws: that cell failed; the other side goes on
            cells[i].status, cells[i].reason = cell_failure(exc, provider)
            live.remove(i)
            return []

    for i in list(live):  # warm-up, in the same order as the first block
        step(i, LoopSpec(iterations=1, warmup=options.loop.warmup))
    for order in block_orders(blocks):
        for i in order:
            if i in live:
                samples[i].extend(step(i, block_spec))
    for i in live:
        if cells[i].status != "ok":
            continue
        stats = LatencyStats.from_samples(samples[i])
        cells[i].samples_ms = [round(s, 5) for s in samples[i]]
        cells[i].latency_ms = {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.as_dict().items()}
        cells[i].throughput_ips = round(options.batch_size / (stats.mean / 1000.0), 3)
        if evaluate is not None:
            cells[i].accuracy = evaluate(engines[i], sides[i])
        if log and evaluate is not None and cells[i].accuracy is None:
            log(f"ab: accuracy not measured for {sides[i].label}")
    engines = [None, None]
    calls = [None, None]
    for i, side in enumerate(sides):
        if cells[i].status == "ok":
            cells[i].memory = _memory(side, provider, options, isolated_memory, log)

    config = {
        "command": "ab",
        "provider": provider,
        "blocks": blocks,
        "iterations_per_block": per_block,
        "order": "ABBA",
        "memory": "isolated process per side" if isolated_memory and options.sample_hz > 0 else "off",
        **options.as_config(),
    }
    runs = []
    for role, side, cell in (("current", current, cells[0]), ("baseline", baseline, cells[1])):
        runs.append(
            RunResult(
                environment=env,
                dataset=dataset,
                cells=[cell],
                config={
                    **config,
                    "side": role,
                    "model_dir": str(side.model_dir),
                    "variants": [side.variant],
                    "providers": [provider],
                },
            )
        )
    return runs[1], runs[0]


def _memory(side: AbSide, provider: str, options: RunOptions, isolated: bool, log: LogFn | None) -> dict[str, Any]:
    """The side's memory figures from a short run in a fresh process (the same sampler as ``bench run``)."""
    if not isolated or options.sample_hz <= 0:
        stats = ResourceSampler(hz=0, gpu_index=None).stats().as_dict()
        if not isolated and options.sample_hz > 0:
            stats["gpu_reason"] = "memory not measured (isolated memory runs turned off)"
        return stats
    short = replace(
        options, loop=LoopSpec(iterations=min(options.loop.iterations, 30), warmup=min(options.loop.warmup, 5))
    )
    spec = cell_spec(side.variant, provider, side.model_dir, side.model_path, short)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        cell = run_cell_process(spec, MEMORY_TIMEOUT_S, Path(tmp), tag="memory")
    if cell.status == "ok" and cell.memory is not None:
        return cell.memory
    # a crashed or hung memory run must not sink the latency verdict
    if log:
        log(f"ab: memory run for {side.label} failed: {cell.reason}")
    stats = ResourceSampler(hz=0, gpu_index=None).stats().as_dict()
    stats["gpu_reason"] = f"memory run failed: {cell.reason or 'no memory figures'}"
    return stats


def run_ab(
    model_dir: Path | None,
    variant: str,
    against: Path | None,
    against_variant: str | None,
    provider: str,
    options: RunOptions,
    tolerances: Tolerances | None = None,
    blocks: int = 10,
    dataset: Path | None = None,
    positive_label: str | None = None,
    threshold: float = 0.5,
    allow_build: bool = True,
    isolated_memory: bool = True,
    log: LogFn | None = None,
) -> tuple[CompareResult, RunResult, RunResult]:
    """``bench ab``: resolve both sides, measure them interleaved, compare (baseline = ``against``)."""
    if against is None and against_variant is None:
        raise InputError("bench ab needs --against DIR (the old model folder) or --against-variant NAME")
    providers = parse_providers(provider)
    if len(providers) != 1:
        raise InputError("bench ab measures one provider at a time; pass a single --provider")
    if "," in variant or variant == "all" or (against_variant and ("," in against_variant or against_variant == "all")):
        raise InputError("bench ab compares one variant against one other; pass a single --variant name")
    bundle_cur = Bundle.discover(resolve_model_dir(model_dir))
    bundle_base = Bundle.discover(against) if against is not None else bundle_cur
    var_base = against_variant or variant
    if against is None and var_base == variant and log:
        log("note: --against-variant equals --variant: an A/A run (both sides are the same file)")
    cur = AbSide(ensure_variant(bundle_cur, variant, allow_build=allow_build, log=log), variant, bundle_cur.root)
    base = AbSide(ensure_variant(bundle_base, var_base, allow_build=allow_build, log=log), var_base, bundle_base.root)
    bundles = {id(cur): bundle_cur, id(base): bundle_base}

    input_batch = evaluate = None
    dataset_fp = None
    if dataset is not None:
        lset = datasets.load_labelled_set(datasets.resolve_dataset(dataset))
        if log:
            for warning in lset.warnings:
                log(f"warning: {warning}")
        paths = [item.path for item in lset.items]
        dataset_fp = lset.fingerprint()

        def input_batch(engine: Any, side: AbSide) -> np.ndarray:
            cfg = bundles[id(side)].preprocess_config(engine.input.image_hw())
            return images_batch(paths, options.batch_size, engine, cfg)

        def evaluate(engine: Any, side: AbSide) -> dict[str, Any] | None:
            bundle = bundles[id(side)]
            labels = bundle.labels() or bundle.labels(engine.num_classes)
            pos, why = positive_index(labels, positive_label)
            if pos is None:  # CLI.md: accuracy unavailable with the reason; latency still runs
                if log:
                    log(f"ab: accuracy unavailable for {side.label}: {why}")
                return None
            return evaluate_engine(
                engine,
                lset.indexed(labels, pos),
                labels,
                pos,
                threshold,
                preprocess=bundle.preprocess_config(engine.input.image_hw()),
                root=lset.root,
                skipped=lset.skipped,
            )

    base_run, cur_run = measure_ab(
        cur,
        base,
        providers[0],
        options,
        blocks=blocks,
        input_batch=input_batch,
        evaluate=evaluate,
        isolated_memory=isolated_memory,
        dataset=dataset_fp,
        log=log,
    )
    result = compare_runs(
        base_run, cur_run, tolerances, pairs=[(base_run.cells[0], cur_run.cells[0])], labels=(base.label, cur.label)
    )
    return result, base_run, cur_run


__all__ = ["AbSide", "block_orders", "measure_ab", "run_ab"]
