"""``bench ab``: two model files (or two variants) measured alternately in blocks, in one job.

Cross-run noise on a shared machine is large (one process's median can be 2× another's), so the
release gate measures both sides in the same job, interleaved, in a randomised balanced order (as many
AB as BA blocks), so drift, thermal state and neighbours' load fall on both sides alike. Each block of
each side is a replicate: a fresh session (one alive at a time: a session settles into a fast or slow
state for many calls, and how many sessions are alive changes the figure), or with ``isolation="process"``
a fresh process; either way timed as ``bench run`` times its replicates (``bench.runner``). The verdicts
are :func:`bench.compare.compare_runs`', whose two-level bootstrap resamples these blocks, then calls
within them. Memory comes from a short run of each side in its own fresh process (RSS is per process).
"""

from __future__ import annotations

import gc
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench import datasets, environment, stats
from bench._cell import cell_spec, run_cell_process
from bench.bundle import Bundle, resolve_model_dir
from bench.compare import CompareResult, Tolerances, compare_runs
from bench.engine import Engine, cell_failure
from bench.errors import InputError
from bench.evaluate import EvalSpec, Evaluator
from bench.modelfile import model_info
from bench.noise import NoiseProbe, combine_noise
from bench.options import DEFAULT_MIN_TIME_S, ISOLATIONS, MAX_BLOCKS, MIN_BLOCKS
from bench.perturb import parse_perturbations
from bench.providers import parse_providers
from bench.results import (
    Accuracy,
    CellMemory,
    CellResult,
    DatasetInfo,
    Environment,
    Noise,
    RunConfig,
    RunResult,
    atomic_write_text,
)
from bench.runner import FreshSessions, ReplicateSamples, RunOptions, fit_threads, image_feed
from bench.sampling import ResourceSampler
from bench.timing import LoopSpec, frozen_heap
from bench.torch_engine import TorchEngine
from bench.variants import ensure_variant

LogFn = Callable[[str], None]
MEMORY_TIMEOUT_S = 300.0  # a memory run that hangs longer is recorded as failed, not waited on forever
BLOCK_TIMEOUT_S = 600.0  # a block in its own process (--isolation process) that hangs longer is a failed side


@dataclass(frozen=True)
class AbSide:
    """One side of an A/B: a model file and where it came from."""

    model_path: Path
    variant: str
    model_dir: Path

    @property
    def label(self) -> str:
        return f"{self.model_dir} [{self.variant}]"


@dataclass
class _SideRun:
    """What one side's blocks accumulate: its cell, its timed samples and the noise they were timed in."""

    side: AbSide
    cell: CellResult
    sessions: FreshSessions  # this side's sessions: one per block (isolation "session"), one to evaluate in
    probe: NoiseProbe  # isolation "session": the noise of every block measured in this process
    timed: ReplicateSamples = field(default_factory=ReplicateSamples)
    block_noise: list[dict[str, Any]] = field(default_factory=list)  # isolation "process": each child's own


def measure_ab(
    current: AbSide,
    baseline: AbSide,
    provider: str,
    options: RunOptions,
    blocks: int | None = None,
    input_batch: Callable[[Engine | TorchEngine, AbSide], np.ndarray] | None = None,
    evaluate: Callable[[Engine | TorchEngine, AbSide], Accuracy | None] | None = None,
    isolated_memory: bool = True,
    dataset: DatasetInfo | None = None,
    log: LogFn | None = None,
    isolation: str = "session",
) -> tuple[RunResult, RunResult]:
    """Measure both sides interleaved; returns (baseline RunResult, current RunResult), one cell each.

    ``options.loop.iterations`` timed calls per side are spread over ``blocks`` blocks (rounded up to
    whole blocks); each block of each side is a replicate: a fresh session (``isolation="session"``; one
    alive at a time) or a fresh process (``"process"``), warmed up, then timed. The side order per block
    is randomised but balanced (as many AB as BA), seeded by ``options.seed`` and recorded.
    ``blocks=None`` chooses them from the cost of a session (:func:`auto_blocks`).
    """
    options, threads_why = fit_threads(provider, options, log)
    if blocks is None:
        blocks = auto_blocks(current, provider, options, log)
    if blocks < 1:
        raise InputError(f"--blocks must be ≥ 1, got {blocks}")
    if isolation not in ISOLATIONS:
        raise InputError(f"--isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    sides = (current, baseline)
    block_options = replace(
        options,
        loop=LoopSpec(
            iterations=math.ceil(options.loop.iterations / blocks),
            warmup=options.loop.warmup,
            min_time_s=options.loop.min_time_s / blocks if options.loop.min_time_s else None,
        ),
        replicates=1,
    )
    env = cast(Environment, environment.fingerprint(options.session.provider_options.device_id))
    cpu_threads = options.cpu_threads(provider)
    runs = []
    for side in sides:
        cell = CellResult(variant=side.variant, provider=provider, batch_size=options.batch_size)
        cell.model = model_info(side.model_path)
        feed = (lambda engine, s=side: input_batch(engine, s)) if input_batch else None
        sessions = FreshSessions(side.model_path, side.variant, provider, block_options, feed, cell.model.sha256)
        runs.append(_SideRun(side, cell, sessions, NoiseProbe(cpu_threads)))
    orders = stats.balanced_order(blocks, options.seed)
    order_text = "".join("AB" if o == (0, 1) else "BA" for o in orders)
    if log:
        log(
            f"ab: {blocks} blocks × {block_options.loop.iterations} calls per side, a fresh {isolation} per block, "
            f"order {order_text} (A = {current.label}, B = {baseline.label})"
        )
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, frozen_heap():
        for block, order in enumerate(orders):
            for i in order:
                if runs[i].cell.status != "ok":
                    continue
                if isolation == "process":
                    _block_in_process(runs[i], provider, block_options, block, Path(tmp))
                else:
                    _block_in_session(runs[i], provider, block_options.loop, block)
    for run in runs:
        cell, side = run.cell, run.side
        if cell.status != "ok" or not run.timed.samples:
            continue
        run.timed.record(cell, block_options.loop.iterations, isolation)
        cell.noise = cast(
            "Noise | None", run.probe.figures() if isolation == "session" else combine_noise(run.block_noise)
        )
        if evaluate is not None:
            cell.accuracy = evaluate(run.sessions.open(), side)  # alone: the timed sessions are gone
            run.sessions.close()
            if cell.accuracy is None and log:
                log(f"ab: accuracy not measured for {side.label}")
    for run in runs:
        if run.cell.status == "ok":
            run.cell.memory = _memory(run.side, provider, options, isolated_memory, log)

    config = cast(
        RunConfig,
        {
            "command": "ab",
            "provider": provider,
            "blocks": blocks,
            "iterations_per_block": block_options.loop.iterations,
            "order": order_text,
            "isolation": isolation,
            "memory": "isolated process per side" if isolated_memory and options.sample_hz > 0 else "off",
            **options.as_config(),
            "replicates": blocks,
        },
    )
    if threads_why:
        config["threads_why"] = threads_why
    results = []
    for role, side, cell in (("current", current, runs[0].cell), ("baseline", baseline, runs[1].cell)):
        results.append(
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
    return results[1], results[0]


def auto_blocks(side: AbSide, provider: str, options: RunOptions, log: LogFn | None = None) -> int:
    """Blocks per side when none are asked for: as many replicates as the timed work can pay for.

    Replicates are the unit that varies (a session's fast or slow state), so more of them narrow the
    interval most; each costs a session and its warm-up. A probe session measures that cost and the
    call time; blocks = timed seconds per side / cost of one block, within [MIN_BLOCKS, MAX_BLOCKS]
    (Kalibera & Jones: spend on the level that varies, in proportion to what it costs). Session
    overhead then stays at most about the timed time: the wall time at most doubles.
    """
    probe = FreshSessions(side.model_path, side.variant, provider, options)
    warmup = max(1, options.loop.warmup)
    try:
        times, create_ms = probe.measure(LoopSpec(iterations=warmup, warmup=0))  # a block's warm-up calls, timed
    except InputError:
        raise
    except Exception:  # the blocks themselves will record why this side cannot run
        return MIN_BLOCKS
    finally:
        probe.close()  # the probe session is gone before the first block
        gc.collect()
    warm_s = sum(times) / 1000.0
    per_call = warm_s / warmup
    block_cost = create_ms / 1000.0 + warm_s
    timed = max(options.loop.min_time_s or 0.0, options.loop.iterations * per_call)
    blocks = int(min(MAX_BLOCKS, max(MIN_BLOCKS, timed / max(block_cost, 1e-6))))
    if log:
        log(
            f"ab: a session and its warm-up cost {block_cost * 1000:.0f} ms, the timed work ≈{timed:.2f} s per side: "
            f"{blocks} blocks (--blocks N to choose)"
        )
    return blocks


def _block_in_session(run: _SideRun, provider: str, loop: LoopSpec, block: int) -> None:
    """One replicate of one side in this process: a fresh session, warm-up, timed calls; the session then goes,
    so the other side's next block opens the only one alive."""
    cell, sessions = run.cell, run.sessions
    try:
        times, create_ms = sessions.measure(loop, during=(run.probe,))
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: that side failed, the other goes on
        cell.status, cell.reason = cell_failure(exc, provider)
        return
    finally:
        sessions.close()
        if sessions.batch is not None:  # the first session built and checked the input
            cell.providers_effective, cell.io_binding = sessions.providers_effective, sessions.io_binding
    run.timed.add(block, times, create_ms)


def _block_in_process(run: _SideRun, provider: str, options: RunOptions, block: int, workdir: Path) -> None:
    """One replicate of one side in a fresh process (bench._cell): process-level state is not shared either."""
    side, cell = run.side, run.cell
    spec = cell_spec(side.variant, provider, side.model_dir, side.model_path, options)
    result = run_cell_process(spec, BLOCK_TIMEOUT_S, workdir, tag=f"block{block}-{id(side)}")
    if result.status != "ok":
        cell.status, cell.reason = result.status, result.reason
        return
    cell.providers_effective, cell.io_binding = result.providers_effective, result.io_binding
    run.timed.add(block, result.samples_ms, result.session_create_ms or 0.0)
    if result.noise:
        run.block_noise.append(dict(result.noise))


def _memory(side: AbSide, provider: str, options: RunOptions, isolated: bool, log: LogFn | None) -> CellMemory:
    """The side's memory figures from a short run in a fresh process (the same sampler as ``bench run``)."""
    if not isolated or options.sample_hz <= 0:
        stats = cast(CellMemory, ResourceSampler(hz=0, gpu_index=None).stats().as_dict())
        if not isolated and options.sample_hz > 0:
            stats["gpu_reason"] = "memory not measured (isolated memory runs turned off)"
        return stats
    short = replace(
        options,
        loop=LoopSpec(iterations=min(options.loop.iterations, 30), warmup=min(options.loop.warmup, 5)),
        replicates=1,
    )
    spec = cell_spec(side.variant, provider, side.model_dir, side.model_path, short)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        cell = run_cell_process(spec, MEMORY_TIMEOUT_S, Path(tmp), tag="memory")
    if cell.status == "ok" and cell.memory is not None:
        return cell.memory
    # a crashed or hung memory run must not sink the latency verdict
    if log:
        log(f"ab: memory run for {side.label} failed: {cell.reason}")
    stats = cast(CellMemory, ResourceSampler(hz=0, gpu_index=None).stats().as_dict())
    stats["gpu_reason"] = f"memory run failed: {cell.reason or 'no memory figures'}"
    return stats


def timed_for_a_while(options: RunOptions) -> RunOptions:
    """``options`` with ``min_time_s`` = DEFAULT_MIN_TIME_S unless one was given: a verdict needs seconds of
    calls per side, and 100 calls of a µs model are 1 ms."""
    if options.loop.min_time_s is not None:
        return options
    return replace(options, loop=replace(options.loop, min_time_s=DEFAULT_MIN_TIME_S))


def write_ab(out: Path, result: CompareResult, baseline: RunResult, current: RunResult) -> None:
    """``bench ab --out DIR``: baseline/ and current/ results, compare.json and compare.md."""
    baseline.write(out / "baseline")
    current.write(out / "current")
    atomic_write_text(out / "compare.json", result.to_json() + "\n")
    atomic_write_text(out / "compare.md", result.to_markdown("bench ab"))


def run_ab(
    model_dir: Path | None,
    variant: str,
    against: Path | None,
    against_variant: str | None,
    provider: str,
    options: RunOptions,
    tolerances: Tolerances | None = None,
    blocks: int | None = None,
    dataset: Path | None = None,
    positive_label: str | None = None,
    threshold: float = 0.5,
    allow_build: bool = True,
    isolated_memory: bool = True,
    log: LogFn | None = None,
    isolation: str = "session",
    perturb: Sequence[str] = (),
) -> tuple[CompareResult, RunResult, RunResult]:
    """``bench ab``: resolve both sides, measure them interleaved, compare (baseline = ``against``).

    Without ``min_time_s`` each side is timed for at least DEFAULT_MIN_TIME_S (:func:`timed_for_a_while`).
    """
    options = timed_for_a_while(options)
    perturbations = parse_perturbations(perturb) if perturb else []
    if perturbations and dataset is None:
        raise InputError("--perturb needs --dataset (a labelled set to evaluate both sides on)")
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
        spec = EvalSpec(lset.root, threshold, positive_label, perturbations=tuple(perturb))
        evaluators = {key: Evaluator(bundle, lset, spec) for key, bundle in bundles.items()}
        feeds = {key: image_feed(paths, options.batch_size, bundle) for key, bundle in bundles.items()}

        def input_batch(engine: Engine | TorchEngine, side: AbSide) -> np.ndarray:
            return feeds[id(side)](engine)

        def evaluate(engine: Engine | TorchEngine, side: AbSide) -> Accuracy | None:
            evaluator = evaluators[id(side)]
            positive, why = evaluator.target(evaluator.labels(engine))
            if positive is None:  # CLI.md: accuracy unavailable with the reason; latency still runs
                if log:
                    log(f"ab: accuracy unavailable for {side.label}: {why}")
                return None
            return evaluator(engine)

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
        isolation=isolation,
    )
    result = compare_runs(
        base_run, cur_run, tolerances, pairs=[(base_run.cells[0], cur_run.cells[0])], labels=(base.label, cur.label)
    )
    return result, base_run, cur_run


__all__ = [
    "DEFAULT_MIN_TIME_S",
    "ISOLATIONS",
    "MAX_BLOCKS",
    "MIN_BLOCKS",
    "AbSide",
    "auto_blocks",
    "measure_ab",
    "run_ab",
    "timed_for_a_while",
    "write_ab",
]
