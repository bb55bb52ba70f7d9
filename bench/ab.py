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

import copy
import gc
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench import datasets, environment, stats
from bench._cell import cell_spec, run_cell_process
from bench.bundle import Bundle, resolve_model_dir
from bench.compare import CompareResult, Tolerances, compare_runs, row_symmetry
from bench.engine import Engine, cell_failure
from bench.errors import InputError
from bench.evaluate import EvalSpec, Evaluator
from bench.modelfile import model_info
from bench.noise import NoiseProbe, combine_noise, load_difference
from bench.options import DEFAULT_MIN_TIME_S, ISOLATIONS, MAX_BLOCKS, MIN_BLOCKS, REPLICATE_WARMUP
from bench.perturb import parse_perturbations
from bench.providers import parse_providers
from bench.results import (
    Accuracy,
    CellMemory,
    CellResult,
    DatasetInfo,
    Environment,
    LookInterval,
    Noise,
    RunConfig,
    RunResult,
    SequentialLook,
    SequentialRecord,
    atomic_write_text,
)
from bench.runner import FreshSessions, ReplicateSamples, RunOptions, fit_threads, image_feed
from bench.sampling import ResourceSampler
from bench.sequential import Interval, Rule, StopReason, confidence_sequence, mixture_ratio, why
from bench.sequential import mde as seq_mde
from bench.sequential import verdict as seq_verdict
from bench.timing import LoopSpec, frozen_heap
from bench.torch_engine import TorchEngine
from bench.variants import ensure_variant, parse_variants

LogFn = Callable[[str], None]
MIN_CALLS_PER_BLOCK = 10  # sequential: a block's median needs some calls (as the fixed design's at 100 calls)
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
    sequential: Rule | None = None,
) -> tuple[RunResult, RunResult]:
    """Measure both sides interleaved; returns (baseline RunResult, current RunResult), one cell each.

    With ``sequential`` (and ``blocks`` None) the blocks come in AB/BA pairs until the rule stops them
    (:func:`_sequential_blocks`); the looks and why it stopped go in both results' config.

    ``options.loop.iterations`` timed calls per side are spread over ``blocks`` blocks (rounded up to
    whole blocks); each block of each side is a replicate: a fresh session (``isolation="session"``; one
    alive at a time) or a fresh process (``"process"``), warmed up, then timed. The side order per block
    is randomised but balanced (as many AB as BA), seeded by ``options.seed`` and recorded.
    ``blocks=None`` chooses them from the cost of a session (:func:`auto_blocks`).
    """
    options, threads_why = fit_threads(provider, options, log)
    if sequential is not None and blocks is None:
        blocks = sequential_blocks(current, provider, options, log)
    elif sequential is not None:
        sequential = None  # --blocks N: the fixed design
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
    record: SequentialRecord | None = None
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, frozen_heap():

        def one_block(block: int, order: tuple[int, int], later: bool) -> None:
            """Both sides' block ``block`` in ``order``; ``later`` blocks of the sequential design warm up as a
            bench run replicate after the first does (REPLICATE_WARMUP: the process is warm)."""
            opts = block_options
            if later:
                opts = replace(opts, loop=replace(opts.loop, warmup=min(opts.loop.warmup, REPLICATE_WARMUP)))
            for i in order:
                if runs[i].cell.status != "ok":
                    continue
                if isolation == "process":
                    _block_in_process(runs[i], provider, opts, block, Path(tmp))
                else:
                    _block_in_session(runs[i], provider, opts.loop, block)

        if sequential is not None:
            if log:
                log(
                    f"ab: sequential: AB/BA pairs of blocks of {block_options.loop.iterations}+ calls per side, a "
                    f"fresh {isolation} per block, until the verdict is settled (at most {blocks} pairs"
                    + (f" or {options.max_time_s:g} s" if options.max_time_s else "")
                    + f"; A = {current.label}, B = {baseline.label})"
                )
            record = _run_sequential(
                runs, one_block, sequential, blocks, options.max_time_s, options.seed, log, isolation
            )
            order_text = "".join(look.get("order", "") for look in record["looks"])
            blocks = 2 * record["pairs"]
        else:
            orders = stats.balanced_order(blocks, options.seed)
            order_text = "".join("AB" if o == (0, 1) else "BA" for o in orders)
            if log:
                log(
                    f"ab: {blocks} blocks × {block_options.loop.iterations} calls per side, a fresh {isolation} per "
                    f"block, order {order_text} (A = {current.label}, B = {baseline.label})"
                )
            for block, order in enumerate(orders):
                one_block(block, order, later=False)
    for run in runs:
        cell, side = run.cell, run.side
        if cell.status != "ok" or not run.timed.samples:
            continue
        run.timed.record(cell, block_options.loop.iterations, isolation)
        cell.noise = _side_noise(run, isolation)
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
    config["design"] = "fixed" if record is None else "sequential"
    if record is not None:
        config["looks"], config["stopped_because"] = record["looks"], record["stopped_because"]
        config["max_pairs"] = record["max_pairs"]
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


def _run_sequential(
    runs: list[_SideRun],
    one_block: Callable[[int, tuple[int, int], bool], None],
    rule: Rule,
    max_pairs: int,
    max_time_s: float | None,
    seed: int,
    log: LogFn | None,
    isolation: str = "session",
) -> SequentialRecord:
    """Pairs of blocks (ABBA or BAAB, a seeded fair coin each) until ``rule`` stops, ``max_pairs`` are measured or
    the next pair would pass ``max_time_s``; a look after every pair, each recorded.

    A verdict the sides' noise so far would take away (:func:`_noise_demotion`: a p95 on two contended sides, a
    p50 difference under different load) does not stop the pairs: they go on until a verdict that stands, or the
    budget — else a +25 % twin beside a CPU hog stopped on its p95 at pair 3 and then lost it (7 of 20)."""
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    looks: list[SequentialLook] = []
    ratios: dict[str, list[float]] = {"median": [], "p95": []}
    block_figures: list[list[tuple[float, float, int]]] = [[], []]  # per side: (median, p95, calls) of each block
    stopped: StopReason = "max_pairs"
    for pair in range(max_pairs):
        abba = bool(rng.integers(2))
        for k, order in enumerate(((0, 1), (1, 0)) if abba else ((1, 0), (0, 1))):
            sizes = [len(run.timed.samples) for run in runs]
            one_block(2 * pair + k, order, pair > 0)
            for i, run in enumerate(runs):
                block = np.asarray(run.timed.samples[sizes[i] :], dtype=np.float64)
                if block.size:
                    block_figures[i].append((stats.quantile(block, 0.5), stats.quantile(block, 0.95), int(block.size)))
        if any(run.cell.status != "ok" for run in runs) or len(block_figures[0]) != len(block_figures[1]):
            stopped = "failed"
            break
        (cur, base) = (block_figures[0][-2:], block_figures[1][-2:])
        ratios["median"].append(_pair_log_ratio(cur, base, 0))
        if min(f[2] for f in cur + base) >= stats.min_samples(0.95):
            ratios["p95"].append(_pair_log_ratio(cur, base, 1))
        p50 = confidence_sequence(ratios["median"], rule.alpha_row, rule.g)
        p95 = confidence_sequence(ratios["p95"], rule.alpha_row, rule.g) if len(ratios["p95"]) == pair + 1 else None
        seconds = time.perf_counter() - started
        looks.append(
            {
                "pair": pair + 1,
                "seconds": round(seconds, 3),
                "order": "ABBA" if abba else "BAAB",
                "p50": _look(p50, rule),
                "p95": _look(p95, rule) if p95 is not None else None,
            }
        )
        if log:
            shown = looks[-1]["p50"]
            span = f"[{shown['low']:.3f}, {shown['high']:.3f}]" if shown["low"] is not None else "[unbounded]"
            log(f"ab: look {pair + 1} ({seconds:.1f} s): p50 ×{shown['ratio']:.3f} {span} {shown['verdict']}")
        noise = (_side_noise(runs[1], isolation), _side_noise(runs[0], isolation))  # (baseline, current)
        reason = rule.stop(_standing("p50", p50, rule, noise), _standing("p95", p95, rule, noise))
        if reason is not None:
            stopped = reason
            break
        if max_time_s is not None and seconds * (pair + 2) / (pair + 1) > max_time_s:
            stopped = "budget"  # the next pair would run past the budget
            break
    return {
        "method": METHOD,
        "alpha": rule.alpha,
        "prior_g": rule.g,
        "pairs": len(looks),
        "max_pairs": max_pairs,
        "max_time_s": max_time_s,
        "seconds": round(time.perf_counter() - started, 3),
        "stopped_because": stopped,
        "looks": looks,
    }


METHOD = (
    "confidence sequence on the per-pair block log-ratios (normal mixture of the t-statistic: Howard, Ramdas, "
    "McAuliffe & Sekhon 2021; Lai 1976), each latency row at alpha/2, valid at every look"
)


def _pair_log_ratio(cur: list[tuple[float, float, int]], base: list[tuple[float, float, int]], which: int) -> float:
    """The pair's unit: the mean of its two blocks' log(statistic current / statistic baseline)."""
    return float(np.mean([math.log(c[which] / b[which]) for c, b in zip(cur, base, strict=True)]))


def _look(interval: Interval, rule: Rule) -> LookInterval:
    return {
        "ratio": round(math.exp(interval.mean), 5),
        "low": round(math.exp(interval.low), 5) if interval.finite else None,
        "high": round(math.exp(interval.high), 5) if interval.finite else None,
        "verdict": seq_verdict(interval, rule.tolerance),
    }


def sequential_blocks(side: AbSide, provider: str, options: RunOptions, log: LogFn | None = None) -> int:
    """The sequential design's block size, as blocks per side of the timed work (also its most pairs).

    As :func:`auto_blocks` (Kalibera & Jones: a block's timed work about what opening it costs), but a block after
    the first warms up with REPLICATE_WARMUP calls, as a ``bench run`` replicate does: the process is warm. Blocks
    are then cheaper and more, and the pairs, not the blocks' length, decide how soon the verdict is settled.
    """
    costs = _probe_costs(side, provider, options)
    if costs is None:
        return MIN_BLOCKS
    create_s, per_call = costs
    block_cost = create_s + min(options.loop.warmup, REPLICATE_WARMUP) * per_call
    timed = max(options.loop.min_time_s or 0.0, options.loop.iterations * per_call)
    calls = max(options.loop.iterations, int(timed / max(per_call, 1e-9)))  # a side's timed calls, --min-time's too
    most = max(MIN_BLOCKS, min(MAX_BLOCKS, calls // MIN_CALLS_PER_BLOCK))
    blocks = int(min(most, max(MIN_BLOCKS, timed / max(block_cost, 1e-6))))
    if log:
        log(
            f"ab: a later block opens and warms up in {block_cost * 1000:.0f} ms, the timed work ≈{timed:.2f} s per "
            f"side: blocks of 1/{blocks} of it (--blocks N for the fixed design)"
        )
    return blocks


def _probe_costs(side: AbSide, provider: str, options: RunOptions) -> tuple[float, float] | None:
    """(session create s, s per call) from a probe session's warm-up calls; None when the side cannot run."""
    probe = FreshSessions(side.model_path, side.variant, provider, options)
    warmup = max(1, options.loop.warmup)
    try:
        times, create_ms = probe.measure(LoopSpec(iterations=warmup, warmup=0))  # a block's warm-up calls, timed
    except InputError:
        raise
    except Exception:  # the blocks themselves will record why this side cannot run
        return None
    finally:
        probe.close()  # the probe session is gone before the first block
        gc.collect()
    return create_ms / 1000.0, sum(times) / 1000.0 / warmup


def apply_sequential(result: CompareResult, base_run: RunResult, cur_run: RunResult, rule: Rule) -> None:
    """The latency rows of a sequential ``bench ab``: each verdict read off its confidence sequence at the last
    look (the bootstrap interval compare_runs made is not valid after stopping on the data), then the gate's
    verdict again; ``result.sequential`` records the looks."""
    config = cur_run.config
    looks = config.get("looks") or []
    b, c = base_run.cells[0], cur_run.cells[0]
    last = looks[-1] if looks else None
    for row in result.rows:
        name = {"latency_p50_ms": "p50", "latency_p95_ms": "p95"}.get(row.metric)
        if name is None or row.verdict == "incomparable":
            continue
        seen = cast("LookInterval | None", (last or {}).get(name))
        ratios = _unit_ratios(b, c, 0.5 if name == "p50" else 0.95)
        interval = confidence_sequence(ratios, rule.alpha_row, rule.g) if seen is not None and ratios else None
        if interval is not None and seen is not None and seen.get("low") is not None and seen.get("high") is not None:
            # the look's own figures (made from the unrounded samples) decide; the recorded ones give the spread
            interval = replace(
                interval,
                mean=math.log(float(seen["ratio"] or 1.0)),
                low=math.log(float(seen["low"] or 1.0)),
                high=math.log(float(seen["high"] or 1.0)),
            )
        row.level, row.resampled, row.replicates_needed = round(1 - rule.alpha_row, 6), "pairs", None
        if interval is None:
            row.verdict, row.ci_low, row.ci_high, row.mde, row.p_value, row.p_adjusted = (
                "inconclusive",
                None,
                None,
                None,
                None,
                None,
            )
            row.why = (
                f"{name}: no sequence (blocks under {stats.min_samples(0.95)} calls have no p95 of their own); "
                "--blocks N measures a fixed design whose bootstrap judges the tail"
                if name == "p95"
                else f"{name}: no look was made (a side failed before the first pair)"
            )
            continue
        decided = seq_verdict(interval, rule.tolerance)
        text = why(name, interval, rule.tolerance, rule.alpha_row)
        e_values = [mixture_ratio(_t(ratios[:k]), k, rule.g) for k in range(2, len(ratios) + 1)]
        p = min(1.0, 1.0 / max(e_values, default=1.0))  # anytime-valid: 1 / the largest e-value seen
        demoted = _noise_demotion(name, decided, b.noise, c.noise)
        if demoted:
            decided, text = "inconclusive", f"inconclusive: {text.split(' (')[0]}, but {demoted}"
        row.verdict, row.why = decided, text
        row.ratio = round(math.exp(interval.mean), 4)
        row.ci_low = round(math.exp(interval.low), 4) if interval.finite else None
        row.ci_high = round(math.exp(interval.high), 4) if interval.finite else None
        row.mde = None if (m := seq_mde(interval, rule.tolerance)) is None else round(m, 4)
        row.p_value, row.p_adjusted = float(f"{p:.3g}"), float(f"{min(1.0, 2 * p):.3g}")
    if any(r.verdict == "regression" for r in result.rows):
        result.verdict = "regression"
    elif any(r.verdict in ("same", "improvement", "inconclusive") for r in result.rows):
        result.verdict = "pass"
    result.symmetry = row_symmetry(result.rows)
    if result.family is not None:
        judged = sum(r.metric in ("latency_p50_ms", "latency_p95_ms") and r.level is not None for r in result.rows)
        family = result.family
        family["why"] += "; bench ab --sequential: p50 and p95 each on a confidence sequence at α/2 (Bonferroni)"
        family["rows"] += judged
        family["expected_false"] = round(family["expected_false"] + judged * rule.alpha_row, 4)
        family["expected_false_unadjusted"] = round(family["expected_false_unadjusted"] + judged * rule.alpha, 4)
    result.sequential = {
        "method": METHOD,
        "alpha": rule.alpha,
        "prior_g": rule.g,
        "pairs": len(looks),
        "max_pairs": int(config.get("max_pairs") or len(looks)),
        "max_time_s": config.get("max_time_s"),
        "seconds": float(last["seconds"]) if last else 0.0,
        "stopped_because": config.get("stopped_because", "failed"),
        "looks": list(looks),
    }


def _unit_ratios(b: CellResult, c: CellResult, q: float) -> list[float]:
    """Per pair of blocks, the mean of its blocks' log-ratios of the q-quantile (blocks = replicate ids 2k, 2k+1);
    [] when a block is too short for the quantile."""
    gb, _ = stats.replicate_groups(b.samples_ms, b.sample_replicates or None)
    gc_, _ = stats.replicate_groups(c.samples_ms, c.sample_replicates or None)
    least = stats.min_samples(q) if q > 0.5 else 1  # a block's median is every block's; a tail needs its calls
    if len(gb) != len(gc_) or min((g.size for g in gb + gc_), default=0) < least:
        return []
    logs = [math.log(stats.quantile(x, q) / stats.quantile(y, q)) for x, y in zip(gc_, gb, strict=True)]
    return [float(np.mean(logs[k : k + 2])) for k in range(0, len(logs) - 1, 2)]


def _t(x: Sequence[float]) -> float:
    n, mean = len(x), float(np.mean(x))
    sd = max(float(np.std(x, ddof=1)), 1e-9)
    return mean / (sd / math.sqrt(n))


def _standing(
    name: str, interval: Interval | None, rule: Rule, noise: tuple[Noise | None, Noise | None]
) -> Interval | None:
    """The row's interval, or None when the verdict read off it would not stand on the sides' noise so far."""
    if interval is None or _noise_demotion(name, seq_verdict(interval, rule.tolerance), *noise):
        return None
    return interval


def _side_noise(run: _SideRun, isolation: str) -> Noise | None:
    """The noise of a side's blocks so far: this process's probe, or its block processes' combined."""
    return cast("Noise | None", run.probe.figures() if isolation == "session" else combine_noise(run.block_noise))


def _noise_demotion(name: str, decided: str, b: Mapping[str, Any] | None, c: Mapping[str, Any] | None) -> str | None:
    """Why a verdict cannot stand on the sides' noise (``b``, ``c``: their Noise objects), as compare_runs says
    it (bench.compare._judge_latency)."""
    if decided not in ("regression", "improvement", "same"):
        return None
    load = load_difference(b, c)
    if load and decided != "same":
        return f"the sides were measured under different load ({load}): the difference may be the load's"
    if name == "p95" and all((noise or {}).get("contended") for noise in (b, c)):
        return "both sides were contended: a tail then times the neighbours' scheduling, not the model"
    return None


def auto_blocks(side: AbSide, provider: str, options: RunOptions, log: LogFn | None = None) -> int:
    """Blocks per side when none are asked for: as many replicates as the timed work can pay for.

    Replicates are the unit that varies (a session's fast or slow state), so more of them narrow the
    interval most; each costs a session and its warm-up. A probe session measures that cost and the
    call time; blocks = timed seconds per side / cost of one block, within [MIN_BLOCKS, MAX_BLOCKS]
    (Kalibera & Jones: spend on the level that varies, in proportion to what it costs). Session
    overhead then stays at most about the timed time: the wall time at most doubles.
    """
    costs = _probe_costs(side, provider, options)
    if costs is None:
        return MIN_BLOCKS
    create_s, per_call = costs
    block_cost = create_s + max(1, options.loop.warmup) * per_call
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
    atomic_write_text(out / "compare.md", ab_markdown(result))


def ab_markdown(result: CompareResult) -> str:
    """The comparison's Markdown; for the sequential design, a line after the table saying how it decided (its
    latency rows' intervals are confidence sequences, not the bootstrap intervals the header names)."""
    text = result.to_markdown("bench ab")
    seq = result.sequential
    if seq is None:
        return text
    return text + (
        f"\nSequential design: {seq['pairs']} pairs of blocks ({seq['seconds']:.1f} s of measuring), stopped: "
        f"{seq['stopped_because']}. The p50/p95 intervals are confidence sequences at {(1 - seq['alpha'] / 2):.1%}, "
        "valid at every look (bench/sequential.py).\n"
    )


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
    sequential: bool = False,
    batch_sizes: Sequence[int] = (),
) -> tuple[CompareResult, RunResult, RunResult]:
    """``bench ab``: resolve both sides, measure them interleaved, compare (baseline = ``against``).

    ``sequential`` (unless ``blocks`` is given): pairs of blocks until the latency verdict is settled
    (bench.sequential), its rows then read off their confidence sequences (:func:`apply_sequential`).

    Several cells (``variant`` a comma list or ``all``, or several ``batch_sizes``): each variant against its
    namesake in ``against``, one cell after the other, each interleaved as one cell is; every row of every
    cell is then one family (Holm, as compare_runs holds a matrix). Cells use the fixed design: a confidence
    sequence per cell would need the family's level split in advance, and stops the cells at different times.

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
    bundle_cur = Bundle.discover(resolve_model_dir(model_dir))
    bundle_base = Bundle.discover(against, flag="--against") if against is not None else bundle_cur
    variants = parse_variants(variant, bundle_cur)
    if against_variant is not None and (len(variants) > 1 or "," in against_variant or against_variant == "all"):
        raise InputError(
            "--against-variant pairs one variant with one other; to compare several, pass --against DIR and "
            "each --variant is measured against its namesake there"
        )
    sizes = list(batch_sizes) or [options.batch_size]
    cells = [(v, b) for v in variants for b in sizes]
    whole = len(cells) > 1
    if against is None and against_variant == variant and log:
        log("note: --against-variant equals --variant: an A/A run (both sides are the same file)")
    roots = {bundle_cur.root: bundle_cur, bundle_base.root: bundle_base}
    hooks, dataset_fp = _dataset_hooks(dataset, roots, positive_label, threshold, perturb, log)

    tol = tolerances or Tolerances()
    rule = Rule(tol.latency, alpha=round(1.0 - tol.confidence, 6)) if sequential and blocks is None else None
    if whole and rule is not None:
        rule = None
        if log:
            log(
                f"ab: {len(cells)} cells, each measured in turn with the fixed design; every row of every cell is "
                "held together by Holm (the sequential design judges one cell)"
            )
    sides: dict[str, tuple[AbSide, AbSide]] = {}  # every variant on both sides resolved before any is measured
    for name in variants:
        base_name = against_variant or name
        sides[name] = (
            AbSide(ensure_variant(bundle_cur, name, allow_build=allow_build, log=log), name, bundle_cur.root),
            AbSide(
                ensure_variant(bundle_base, base_name, allow_build=allow_build, log=log), base_name, bundle_base.root
            ),
        )
    measured: list[tuple[RunResult, RunResult]] = []
    for number, (name, batch) in enumerate(cells, start=1):
        cur, base = sides[name]
        if whole and log:
            log(f"ab: cell {number}/{len(cells)}: {name} · {providers[0]} · batch {batch}")
        input_batch, evaluate = hooks(batch)
        measured.append(
            measure_ab(
                cur,
                base,
                providers[0],
                replace(options, batch_size=batch),
                blocks=blocks,
                input_batch=input_batch,
                evaluate=evaluate,
                isolated_memory=isolated_memory,
                dataset=dataset_fp,
                log=log,
                isolation=isolation,
                sequential=rule,
            )
        )
    if whole:
        base_run, cur_run = (_cells_in_one_run([m[k] for m in measured], variants, sizes) for k in (0, 1))
        labels: tuple[str | Path, str | Path] = (bundle_base.root, bundle_cur.root)
    else:
        (base_run, cur_run), labels = measured[0], (base.label, cur.label)
    by_sequence = rule is not None and cur_run.config.get("design") == "sequential"
    result = compare_runs(
        base_run,
        cur_run,
        tolerances,
        pairs=list(zip(base_run.cells, cur_run.cells, strict=True)),
        labels=labels,
        latency_by_sequence=by_sequence,
    )
    if rule is not None and by_sequence:
        apply_sequential(result, base_run, cur_run, rule)
        if log and result.sequential is not None:
            seq = result.sequential
            log(
                f"ab: sequential: stopped after {seq['pairs']} pairs ({seq['seconds']:.1f} s of measuring): "
                f"{seq['stopped_because']}"
            )
    return result, base_run, cur_run


Hooks = tuple[
    "Callable[[Engine | TorchEngine, AbSide], np.ndarray] | None",
    "Callable[[Engine | TorchEngine, AbSide], Accuracy | None] | None",
]


def _dataset_hooks(
    dataset: Path | None,
    bundles: Mapping[Path, Bundle],
    positive_label: str | None,
    threshold: float,
    perturb: Sequence[str],
    log: LogFn | None,
) -> tuple[Callable[[int], Hooks], DatasetInfo | None]:
    """With a labelled set: per batch size, the timed input (its real images) and the evaluation of each side's
    bundle; without one, no hooks (random input, no accuracy)."""
    if dataset is None:
        return (lambda batch: (None, None)), None
    lset = datasets.load_labelled_set(datasets.resolve_dataset(dataset))
    if log:
        for warning in lset.warnings:
            log(f"warning: {warning}")
    paths = [item.path for item in lset.items]
    spec = EvalSpec(lset.root, threshold, positive_label, perturbations=tuple(perturb))
    evaluators = {root: Evaluator(bundle, lset, spec) for root, bundle in bundles.items()}
    feeds: dict[tuple[Path, int], Callable[[Engine | TorchEngine], np.ndarray]] = {}
    scored: dict[Path, Accuracy | None] = {}  # a file's accuracy does not depend on the timed batch size

    def hooks(batch: int) -> Hooks:
        def input_batch(engine: Engine | TorchEngine, side: AbSide) -> np.ndarray:
            key = (side.model_dir, batch)
            if key not in feeds:
                feeds[key] = image_feed(paths, batch, bundles[side.model_dir])
            return feeds[key](engine)

        def evaluate(engine: Engine | TorchEngine, side: AbSide) -> Accuracy | None:
            if side.model_path not in scored:  # evaluated once per file, whatever the cells' batch sizes
                evaluator = evaluators[side.model_dir]
                positive, why = evaluator.target(evaluator.labels(engine))
                if positive is None and log:  # CLI.md: accuracy unavailable with the reason; latency still runs
                    log(f"ab: accuracy unavailable for {side.label}: {why}")
                scored[side.model_path] = None if positive is None else evaluator(engine)
            return copy.deepcopy(scored[side.model_path])

        return input_batch, evaluate

    return hooks, lset.fingerprint()


_PER_CELL_CONFIG = ("blocks", "iterations_per_block", "order", "threads", "threads_why")


def _cells_in_one_run(runs: list[RunResult], variants: list[str], sizes: list[int]) -> RunResult:
    """One side's cells, each measured by its own measure_ab, as one run: the run-wide config is the first
    cell's, less what each cell chose for itself (blocks, order, threads), which ``ab_cells`` keeps per cell."""
    config = cast(dict[str, Any], dict(runs[0].config))
    designs = []
    for run in runs:
        cell = run.cells[0]
        design = {"variant": cell.variant, "batch_size": cell.batch_size}
        design.update({k: run.config[k] for k in _PER_CELL_CONFIG if k in run.config})  # type: ignore[literal-required]
        designs.append(design)
    for key in (*_PER_CELL_CONFIG, "batch_size"):
        config.pop(key, None)
    config.update(
        variants=variants,
        batch_sizes=sizes,
        replicates=min(int(run.config.get("replicates") or 0) for run in runs),
        ab_cells=designs,
    )
    return RunResult(
        environment=runs[0].environment,
        dataset=runs[0].dataset,
        cells=[run.cells[0] for run in runs],
        config=cast(RunConfig, config),
    )


__all__ = [
    "DEFAULT_MIN_TIME_S",
    "ISOLATIONS",
    "MAX_BLOCKS",
    "MIN_BLOCKS",
    "AbSide",
    "ab_markdown",
    "apply_sequential",
    "auto_blocks",
    "measure_ab",
    "run_ab",
    "sequential_blocks",
    "timed_for_a_while",
    "write_ab",
]
