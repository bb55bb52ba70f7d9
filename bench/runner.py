"""Measure one cell: R replicates, each a fresh Engine session warmed up and timed, under the resource sampler.

A session settles into a fast or a slow state for many calls, and how many sessions are alive changes
the figure itself; so every replicate opens a new session after the previous one is gone (one alive at a
time), and raw samples keep their replicate index for the hierarchical statistics of ``bench.stats``.
Python's GC is off during timed calls (bench.timing), nothing draws during them (progress moves between
replicates), and the machine's load is recorded over the timed phases (bench.noise).

Whatever goes wrong on the provider's side becomes the cell's status and reason; only input errors
(bad flags, a broken model file) propagate, so ``bench run`` can exit 2 and a matrix can record them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends import open_engine
from bench.engine import Engine, SessionSpec, cell_failure
from bench.errors import InputError
from bench.modelfile import model_info
from bench.noise import NoiseProbe, intra_op_threads
from bench.preprocess import PreprocessConfig, load_image, preprocess_batch
from bench.providers import ProviderOptions, is_gpu
from bench.results import CellResult, ModelInfo, Replicates
from bench.sampling import ResourceSampler
from bench.stats import noise_components, replicate_groups
from bench.timing import LatencyStats, LoopSpec, frozen_heap, timed_loop
from bench.torch_engine import TorchEngine

DEFAULT_REPLICATES = 5  # fresh sessions per cell: chosen from A/A runs on a 2-core box (README, "Verdicts")
# Warm-up calls of a replicate after the first: the first replicate's --warmup has warmed the process (thread
# pool, allocator, caches); a fresh session then needs its first call (arena, plan), measured at 1.0–1.7× the
# steady median on the demo and a ViT-base export, the second within the steady spread.
REPLICATE_WARMUP = 2

ProgressFn = Callable[[int, float], None]


@dataclass(frozen=True)
class RunOptions:
    """Everything that decides how a cell is measured; recorded as the result's ``config``."""

    batch_size: int = 1
    loop: LoopSpec = field(default_factory=LoopSpec)
    session: SessionSpec = field(default_factory=SessionSpec)
    io_binding: bool | None = None  # None: on for GPU providers, off for CPU
    sample_hz: float = 10.0
    seed: int = 0
    replicates: int = DEFAULT_REPLICATES  # fresh sessions the timed calls are split over

    def __post_init__(self) -> None:
        if self.replicates < 1:
            raise InputError(f"--replicates must be ≥ 1, got {self.replicates}")

    def replicate_loops(self) -> list[LoopSpec]:
        """Each replicate's loop: ``iterations`` (and ``min_time_s``) shared out exactly; ``--warmup`` calls
        before the first, ``REPLICATE_WARMUP`` (at most ``--warmup``) before each later one.

        Fewer iterations than replicates: one call per replicate, as many replicates as iterations.
        """
        loop = self.loop
        count = min(self.replicates, loop.iterations)
        per, extra = divmod(loop.iterations, count)
        min_time = loop.min_time_s / count if loop.min_time_s else None
        return [
            LoopSpec(
                iterations=per + (r < extra),
                warmup=loop.warmup if r == 0 else min(loop.warmup, REPLICATE_WARMUP),
                min_time_s=min_time,
            )
            for r in range(count)
        ]

    def cpu_threads(self, provider: str) -> int | None:
        """The CPU threads a session on ``provider`` computes with, for the contention check (bench.noise);
        None on a GPU provider, where the CPU only launches work."""
        return None if is_gpu(provider) else intra_op_threads(self.session.threads)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON for a child process (``bench._cell``); :meth:`from_dict` rebuilds it."""
        data = asdict(self)
        cache = data["session"]["provider_options"].get("trt_cache_dir")
        data["session"]["provider_options"]["trt_cache_dir"] = str(cache) if cache is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunOptions:
        session = dict(data["session"])
        po = dict(session.pop("provider_options"))
        if po.get("trt_cache_dir") is not None:
            po["trt_cache_dir"] = Path(po["trt_cache_dir"])
        return cls(
            batch_size=data["batch_size"],
            loop=LoopSpec(**data["loop"]),
            session=SessionSpec(**session, provider_options=ProviderOptions(**po)),
            io_binding=data["io_binding"],
            sample_hz=data["sample_hz"],
            seed=data["seed"],
            replicates=data.get("replicates", 1),
        )

    def as_config(self) -> dict[str, Any]:
        po = self.session.provider_options
        return {
            "batch_size": self.batch_size,
            "iterations": self.loop.iterations,
            "warmup": self.loop.warmup,
            "replicate_warmup": min(self.loop.warmup, REPLICATE_WARMUP),
            "min_time_s": self.loop.min_time_s,
            "threads": self.session.threads,
            "inter_op_threads": self.session.inter_op_threads,
            "graph_opt": self.session.graph_opt,
            "device_id": po.device_id,
            "trt_fp16": po.trt_fp16,
            "trt_int8": po.trt_int8,
            "cuda_graph": po.cuda_graph,
            "trt_cache": str(po.trt_cache_dir) if po.trt_cache_dir else None,
            "io_binding": self.io_binding,
            "sample_hz": self.sample_hz,
            "seed": self.seed,
            "replicates": self.replicates,
            "gc_disabled_during_timing": True,
        }


def measure_cell(
    model_path: Path,
    variant: str,
    provider: str,
    options: RunOptions,
    input_batch: Callable[[Engine], np.ndarray] | None = None,
    evaluate: Callable[[Engine], dict[str, Any]] | None = None,
    progress: ProgressFn | None = None,
    model: ModelInfo | None = None,
) -> CellResult:
    """Measure ``variant`` on ``provider`` in ``options.replicates`` fresh sessions; never raises for provider
    trouble (the cell says why). ``model``: the file's ModelInfo when the caller has hashed it already."""
    cell = CellResult(variant=variant, provider=provider, batch_size=options.batch_size)
    cell.model = model or model_info(model_path)
    gpu_index = options.session.provider_options.device_id if is_gpu(provider) else None
    loops = options.replicate_loops()
    samples: list[float] = []
    creates: list[float] = []
    noise = NoiseProbe(options.cpu_threads(provider))
    batch: np.ndarray | None = None
    engine: Engine | TorchEngine | None = None
    try:
        with frozen_heap(), ResourceSampler(hz=options.sample_hz, gpu_index=gpu_index) as sampler:
            for r, loop in enumerate(loops):
                engine = None
                gc.collect()  # the previous replicate's session is gone before the next one is made
                engine = open_engine(model_path, variant, provider, options.session, model_sha256=cell.model.sha256)
                creates.append(round(engine.session_create_ms, 3))
                if batch is None:
                    cell.providers_effective = engine.providers_effective
                    batch = (
                        input_batch(engine) if input_batch else engine.random_batch(options.batch_size, options.seed)
                    )
                    engine.check_batch_size(batch.shape[0])
                    cell.io_binding = engine.io_binding_default if options.io_binding is None else options.io_binding
                call = engine.timed_call(batch, io_binding=bool(cell.io_binding))
                with noise, sampler.timed():
                    times = timed_loop(call, loop)
                samples.extend(times)
                cell.sample_replicates.extend([r] * len(times))
                del call
                if progress is not None:
                    progress(len(times), float(np.median(times)))
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: the cell says why, the run goes on
        cell.status, cell.reason = cell_failure(exc, provider)
        cell.sample_replicates = []
        return cell
    stats = LatencyStats.from_samples(samples)
    cell.session_create_ms = creates[0]
    cell.samples_ms = [round(s, 5) for s in samples]
    cell.latency_ms = {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.as_dict().items()}
    cell.throughput_ips = round(options.batch_size / (stats.mean / 1000.0), 3)
    cell.memory = sampler.stats(timed_images=len(samples) * options.batch_size).as_dict()
    gpu_run = engine.gpu_run() if engine is not None else None
    if gpu_run is not None and batch is not None:
        if not cell.io_binding:  # end to end: where the time goes (copy in, compute, copy out)
            gpu_run["copy_breakdown_ms"] = engine.copy_breakdown(batch, calls=min(options.loop.iterations, 100))
        cell.memory["gpu_run"] = gpu_run
    cell.replicates = replicate_figures(samples, cell.sample_replicates, creates, loops[0].iterations, "session")
    cell.noise = noise.figures()
    if evaluate is not None and engine is not None:
        cell.accuracy = evaluate(engine)
    return cell


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


def images_batch(paths: Sequence[Path], batch_size: int, engine: Engine, preprocess: PreprocessConfig) -> np.ndarray:
    """A real image batch: the first ``batch_size`` images of a dataset (cycled), preprocessed."""
    if not paths:
        raise InputError("the dataset has no images to use as input")
    chosen = [paths[i % len(paths)] for i in range(batch_size)]
    return preprocess_batch([load_image(p) for p in chosen], preprocess).astype(engine.input.dtype)


__all__ = ["DEFAULT_REPLICATES", "REPLICATE_WARMUP", "RunOptions", "images_batch", "measure_cell", "replicate_figures"]
