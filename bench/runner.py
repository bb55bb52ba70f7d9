"""Measure one cell: R replicates, each a fresh Engine session warmed up and timed, under the resource sampler.

A session settles into a fast or a slow state for many calls, and how many sessions are alive changes
the figure itself; so every replicate opens a new session after the previous one is gone (one alive at a
time), and raw samples keep their replicate index for the hierarchical statistics of ``bench.stats``.
Python's GC is off during timed calls (bench.timing), nothing draws during them (progress moves between
replicates), and the machine's load is recorded over the timed phases (bench.noise). ``bench ab`` times its
blocks through the same :class:`FreshSessions` and figures them with the same :class:`ReplicateSamples`.

Whatever goes wrong on the provider's side becomes the cell's status and reason; only input errors
(bad flags, a broken model file) propagate, so ``bench run`` can exit 2 and a matrix can record them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from bench.backends import open_engine
from bench.bundle import Bundle
from bench.engine import Engine, cell_failure
from bench.errors import InputError
from bench.modelfile import model_info
from bench.noise import NoiseProbe, fitting_threads
from bench.options import DEFAULT_REPLICATES, REPLICATE_WARMUP, RunOptions
from bench.preprocess import ImageError, PreprocessConfig, load_image, preprocess_batch
from bench.providers import is_gpu
from bench.results import (
    Accuracy,
    CellLatency,
    CellMemory,
    CellResult,
    ModelInfo,
    Noise,
    PrecisionLook,
    Replicates,
)
from bench.sampling import ResourceSampler
from bench.stats import MIN_GROUPS, noise_components, quantile_interval, replicate_groups
from bench.timing import LatencyStats, LoopSpec, frozen_heap, timed_loop
from bench.torch_engine import TorchEngine

ProgressFn = Callable[[int, float], None]
LogFn = Callable[[str], None]
InputBatchFn = Callable[[Engine | TorchEngine], np.ndarray]
EvaluateFn = Callable[[Engine | TorchEngine], Accuracy | None]
CONTENTION_PROBE_S = 0.3  # seconds of looking at the others' load before the threads are chosen
PRECISION_BUDGET_S = 60.0  # --target-precision without --max-time: seconds a cell may take at most
MAX_PRECISION_REPLICATES = 200  # --target-precision: replicates a cell gets at most, whatever the budget


class FreshSessions:
    """Replicates of one model file on one provider, each timed in a session of its own.

    The one timed path of bench: ``measure_cell``'s replicates and ``bench ab``'s blocks both come here, so the
    input batch is built and checked, and the IOBinding default resolved, on the first session only and in one
    place. Only the last replicate's session stays open (``engine``), for what follows the timing (GPU
    figures, accuracy); :meth:`close` lets it go when another session must be the only one alive.
    """

    def __init__(
        self,
        model_path: Path,
        variant: str,
        provider: str,
        options: RunOptions,
        input_batch: InputBatchFn | None = None,
        model_sha256: str | None = None,
    ) -> None:
        self.model_path, self.variant, self.provider, self.options = model_path, variant, provider, options
        self.input_batch = input_batch
        self.model_sha256 = model_sha256
        self.engine: Engine | TorchEngine | None = None
        self.batch: np.ndarray | None = None  # set once checked, with io_binding
        self.io_binding: bool | None = None
        self.providers_effective: list[str] = []

    def measure(self, loop: LoopSpec, during: Sequence[AbstractContextManager[Any]] = ()) -> tuple[list[float], float]:
        """One replicate: (ms per timed call, session create ms). The previous session is gone before this one
        opens; ``during`` (noise probe, sampler phase) is entered around the warm-up and timed calls."""
        options = self.options
        engine = self.open()
        if self.batch is None:
            self.providers_effective = engine.providers_effective
            batch = (
                self.input_batch(engine) if self.input_batch else engine.random_batch(options.batch_size, options.seed)
            )
            engine.check_batch_size(batch.shape[0])
            self.io_binding = engine.io_binding_default if options.io_binding is None else options.io_binding
            self.batch = batch
        call = engine.timed_call(self.batch, io_binding=bool(self.io_binding))
        with ExitStack() as phase:
            for context in during:
                phase.enter_context(context)
            times = timed_loop(call, loop)
        return times, round(engine.session_create_ms, 3)

    def open(self) -> Engine | TorchEngine:
        """A fresh session, the previous one gone first (one alive at a time); it stays open until :meth:`close`."""
        self.close()
        gc.collect()
        self.engine = open_engine(
            self.model_path, self.variant, self.provider, self.options.session, model_sha256=self.model_sha256
        )
        return self.engine

    def close(self) -> None:
        self.engine = None


@dataclass
class ReplicateSamples:
    """A cell's timed calls gathered over its replicates: each call's time and replicate, each session's create time."""

    samples: list[float] = field(default_factory=list)
    replicate_ids: list[int] = field(default_factory=list)
    session_create_ms: list[float] = field(default_factory=list)

    def add(self, replicate: int, times: Sequence[float], session_create_ms: float) -> None:
        self.samples.extend(times)
        self.replicate_ids.extend([replicate] * len(times))
        self.session_create_ms.append(session_create_ms)

    def record(self, cell: CellResult, iterations_per_replicate: int, isolation: str) -> None:
        """Write the cell's samples, latency, throughput and replicate figures (bench run, matrix and ab alike)."""
        stats = LatencyStats.from_samples(self.samples)
        cell.session_create_ms = self.session_create_ms[0]
        cell.samples_ms = [round(s, 5) for s in self.samples]
        cell.sample_replicates = list(self.replicate_ids)
        cell.latency_ms = cast(
            CellLatency, {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.as_dict().items()}
        )
        cell.throughput_ips = round(cell.batch_size / (stats.mean / 1000.0), 3)
        cell.replicates = replicate_figures(
            self.samples, self.replicate_ids, self.session_create_ms, iterations_per_replicate, isolation
        )


def measure_cell(
    model_path: Path,
    variant: str,
    provider: str,
    options: RunOptions,
    input_batch: InputBatchFn | None = None,
    evaluate: EvaluateFn | None = None,
    progress: ProgressFn | None = None,
    model: ModelInfo | None = None,
) -> CellResult:
    """Measure ``variant`` on ``provider`` in ``options.replicates`` fresh sessions; never raises for provider
    trouble (the cell says why). ``model``: the file's ModelInfo when the caller has hashed it already."""
    cell = CellResult(variant=variant, provider=provider, batch_size=options.batch_size)
    cell.model = model or model_info(model_path)
    gpu_index = options.session.provider_options.device_id if is_gpu(provider) else None
    loops = options.replicate_loops()
    sessions = FreshSessions(model_path, variant, provider, options, input_batch, model_sha256=cell.model.sha256)
    timed = ReplicateSamples()
    noise = NoiseProbe(options.cpu_threads(provider))
    precision = None
    try:
        with frozen_heap(), ResourceSampler(hz=options.sample_hz, gpu_index=gpu_index) as sampler:
            started = time.perf_counter()
            for r, loop in enumerate(loops):
                times, create_ms = sessions.measure(loop, during=(noise, sampler.timed()))
                timed.add(r, times, create_ms)
                if progress is not None:
                    progress(len(times), float(np.median(times)))
            if options.target_precision is not None:
                more = replace(loops[-1], warmup=min(options.loop.warmup, REPLICATE_WARMUP))

                def one_more(r: int) -> None:
                    times, create_ms = sessions.measure(more, during=(noise, sampler.timed()))
                    timed.add(r, times, create_ms)
                    if progress is not None:
                        progress(len(times), float(np.median(times)))

                precision = until_precise(timed, options, one_more, started)
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: the cell says why, the run goes on
        cell.status, cell.reason = cell_failure(exc, provider)
        return cell
    finally:
        cell.providers_effective, cell.io_binding = sessions.providers_effective, sessions.io_binding
    timed.record(cell, loops[0].iterations, "session")
    if precision is not None and cell.replicates is not None:
        cell.replicates["looks"], cell.replicates["stopped_because"] = precision
    memory = cast(CellMemory, sampler.stats(timed_images=len(timed.samples) * options.batch_size).as_dict())
    cell.memory = memory
    engine, batch = sessions.engine, sessions.batch
    gpu_run = engine.gpu_run() if engine is not None else None
    if engine is not None and gpu_run is not None and batch is not None:
        if not cell.io_binding:  # end to end: where the time goes (copy in, compute, copy out)
            gpu_run["copy_breakdown_ms"] = engine.copy_breakdown(batch, calls=min(options.loop.iterations, 100))
        memory["gpu_run"] = gpu_run
    cell.noise = cast(Noise, noise.figures())
    if evaluate is not None and engine is not None:
        cell.accuracy = evaluate(engine)
    return cell


def until_precise(
    timed: ReplicateSamples, options: RunOptions, one_more: Callable[[int], None], started: float
) -> tuple[list[PrecisionLook], Literal["precise", "budget", "max_replicates"]]:
    """``--target-precision``: replicates added (``one_more(index)``) until the p50's 95 % two-level interval
    (bench.stats, as every interval of bench) is within ± the target of the p50, ``--max-time`` (default
    ``PRECISION_BUDGET_S``) is spent or ``MAX_PRECISION_REPLICATES`` are measured. A look after every replicate
    from the ``MIN_GROUPS``-th on, each recorded. The target is a precision, not a test: stopping on it gives
    no verdict, so no error rate needs guarding against the repeated looks."""
    target = float(options.target_precision or 0.0)
    budget = options.max_time_s if options.max_time_s is not None else PRECISION_BUDGET_S
    looks: list[PrecisionLook] = []
    while True:
        count = len(timed.session_create_ms)
        groups, _unit = replicate_groups(timed.samples, timed.replicate_ids)
        found = quantile_interval(groups, "median") if count >= MIN_GROUPS else None
        seconds = time.perf_counter() - started
        if found is not None:
            point, low, high = found
            half = (high - low) / 2.0 / point
            look: PrecisionLook = {"replicates": count, "seconds": round(seconds, 3), "p50_ms": round(point, 5)}
            look["half_width"] = round(half, 5)
            looks.append(look)
            if half <= target:
                return looks, "precise"
        if count >= MAX_PRECISION_REPLICATES:
            return looks, "max_replicates"
        if seconds + seconds / count > budget:  # the next replicate would run past the budget
            return looks, "budget"
        one_more(count)


def fit_threads(
    provider: str, options: RunOptions, log: LogFn | None = None, *, command: str = "ab", measured: str = "both sides"
) -> tuple[RunOptions, str | None]:
    """Without ``--threads`` on a CPU: fewer intra-op threads when other processes hold CPUs bench's would need.

    Beside a busy neighbour every parallel operator waits for a core, adding the same delay to both sides
    and shrinking the difference (a +24 % conv net read +9 % with 2 threads beside a one-core hog, +24 %
    with 1), and a lone figure follows the neighbour (``bench run`` at load 3.3: p50 6.05 ms with ORT's
    threads, 2.17 ms with 1). A short look at the others' load (``CONTENTION_PROBE_S``, bench idle) decides
    (bench.noise.fitting_threads); the choice and why go in the result's config (``threads_why``), said on
    ``log`` as ``command: why``. ``--threads N`` is always used as given (``--threads 0``: ORT's default);
    ``measured``: what the why says was measured with the fitted threads (ab: "both sides").
    """
    if options.session.threads is not None or is_gpu(provider):
        return options, None
    probe = NoiseProbe(options.cpu_threads(provider))
    with probe:
        time.sleep(CONTENTION_PROBE_S)
    noise = probe.figures()
    default, others, cpus = noise["threads"], noise["others_cpu_cores"], noise["cpu_count"]
    threads = fitting_threads(others, default, cpus) if noise.get("contended") else None
    if threads is None:  # room for ORT's threads, or one core and a neighbour: nothing fewer to fit
        return options, None
    why = (
        f"other processes used {others:.2f} of {cpus} CPUs before measuring: {measured} measured with "
        f"--threads {threads} instead of ORT's {default} (their threads would wait for a core and dilute the "
        f"difference; --threads 0 keeps ORT's default)"
    )
    if log:
        log(f"{command}: {why}")
    return replace(options, session=replace(options.session, threads=threads)), why


def replicate_figures(
    samples: Sequence[float], ids: Sequence[int], creates: Sequence[float], per_replicate: int, isolation: str
) -> Replicates:
    """The ``replicates`` object of a cell: how many, how made, each one's median, and the noise at each level."""
    groups, _unit = replicate_groups(samples, ids)
    components = noise_components(groups)
    return {
        "count": len(groups),
        "isolation": "process" if isolation == "process" else "session",
        "iterations_per_replicate": per_replicate,
        "session_create_ms": list(creates),
        "p50_ms": [round(float(np.median(g)), 5) for g in groups],
        "cv_between": None if components.cv_between is None else round(components.cv_between, 5),
        "cv_within": None if components.cv_within is None else round(components.cv_within, 5),
        "gc_disabled": True,
    }


def images_batch(
    paths: Sequence[Path],
    batch_size: int,
    engine: Engine | TorchEngine,
    preprocess: PreprocessConfig,
    skipped: list[str] | None = None,
) -> np.ndarray:
    """A real image batch: the first ``batch_size`` images of a dataset that decode (cycled), preprocessed.

    An image that does not decode (truncated, not an image) is skipped and named in ``skipped``, as
    ``bench eval`` skips it, rather than failing the cell; only a set where none decodes is an InputError.
    """
    if not paths:
        raise InputError("the dataset has no images to use as input")
    decoded: dict[Path, Any] = {}
    bad: dict[Path, str] = {}
    chosen: list[Any] = []
    index = 0
    while len(chosen) < batch_size:
        if len(bad) == len(paths):
            raise InputError(f"none of the dataset's {len(paths)} images decodes ({next(iter(bad.values()))})")
        path = Path(paths[index % len(paths)])
        index += 1
        if path in bad:
            continue
        if path not in decoded:
            try:
                decoded[path] = load_image(path)
            except ImageError as exc:
                bad[path] = f"{path.parent.name}/{path.name}: {exc.kind}: {exc}"
                continue
        chosen.append(decoded[path])
    if skipped is not None:
        skipped.extend(why for why in bad.values() if why not in skipped)
    return preprocess_batch(chosen, preprocess).astype(engine.input.dtype)


def image_feed(
    paths: Sequence[Path], batch_size: int, bundle: Bundle, skipped: list[str] | None = None
) -> InputBatchFn:
    """``input_batch`` of real images: :func:`images_batch` preprocessed as ``bundle`` says at the model's size;
    images that do not decode are skipped and named in ``skipped``."""

    def feed(engine: Engine | TorchEngine) -> np.ndarray:
        return images_batch(paths, batch_size, engine, bundle.preprocess_config(engine.input.image_hw()), skipped)

    return feed


__all__ = [
    "CONTENTION_PROBE_S",
    "DEFAULT_REPLICATES",
    "REPLICATE_WARMUP",
    "FreshSessions",
    "ReplicateSamples",
    "RunOptions",
    "fit_threads",
    "image_feed",
    "images_batch",
    "measure_cell",
    "replicate_figures",
    "until_precise",
]
