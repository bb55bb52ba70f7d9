"""Measure one cell: open an Engine, warm up, run the timed loop under the resource sampler.

Whatever goes wrong on the provider's side becomes the cell's status and reason; only input errors
(bad flags, a broken model file) propagate, so ``bench run`` can exit 2 and a matrix can record them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.engine import Engine, SessionSpec, cell_failure
from bench.errors import InputError
from bench.modelfile import model_info
from bench.preprocess import PreprocessConfig, load_image, preprocess_batch
from bench.providers import ProviderOptions, is_gpu
from bench.results import CellResult
from bench.sampling import ResourceSampler
from bench.timing import LatencyStats, LoopSpec, timed_loop

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
        )

    def as_config(self) -> dict[str, Any]:
        po = self.session.provider_options
        return {
            "batch_size": self.batch_size,
            "iterations": self.loop.iterations,
            "warmup": self.loop.warmup,
            "min_time_s": self.loop.min_time_s,
            "threads": self.session.threads,
            "inter_op_threads": self.session.inter_op_threads,
            "graph_opt": self.session.graph_opt,
            "device_id": po.device_id,
            "trt_fp16": po.trt_fp16,
            "trt_cache": str(po.trt_cache_dir) if po.trt_cache_dir else None,
            "io_binding": self.io_binding,
            "sample_hz": self.sample_hz,
            "seed": self.seed,
        }


def measure_cell(
    model_path: Path,
    variant: str,
    provider: str,
    options: RunOptions,
    input_batch: Callable[[Engine], np.ndarray] | None = None,
    evaluate: Callable[[Engine], dict[str, Any]] | None = None,
    progress: ProgressFn | None = None,
) -> CellResult:
    """Measure ``variant`` on ``provider``; never raises for provider trouble (the cell says why)."""
    cell = CellResult(variant=variant, provider=provider, batch_size=options.batch_size)
    cell.model = model_info(model_path)
    gpu_index = options.session.provider_options.device_id if is_gpu(provider) else None
    try:
        with ResourceSampler(hz=options.sample_hz, gpu_index=gpu_index) as sampler:
            engine = Engine(model_path, provider, options.session)
            cell.session_create_ms = round(engine.session_create_ms, 3)
            cell.providers_effective = engine.providers_effective
            batch = input_batch(engine) if input_batch else engine.random_batch(options.batch_size, options.seed)
            engine.check_batch_size(batch.shape[0])
            use_binding = engine.io_binding_default if options.io_binding is None else options.io_binding
            cell.io_binding = use_binding
            call = engine.timed_call(batch, io_binding=use_binding)
            samples = timed_loop(call, options.loop, progress)
    except InputError:
        raise
    except Exception as exc:  # provider trouble or an inference that throws: the cell says why, the run goes on
        cell.status, cell.reason = cell_failure(exc, provider)
        return cell
    stats = LatencyStats.from_samples(samples)
    cell.samples_ms = [round(s, 5) for s in samples]
    cell.latency_ms = {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.as_dict().items()}
    cell.throughput_ips = round(options.batch_size / (stats.mean / 1000.0), 3)
    cell.memory = sampler.stats().as_dict()
    if evaluate is not None:
        cell.accuracy = evaluate(engine)
    return cell


def images_batch(paths: Sequence[Path], batch_size: int, engine: Engine, preprocess: PreprocessConfig) -> np.ndarray:
    """A real image batch: the first ``batch_size`` images of a dataset (cycled), preprocessed."""
    if not paths:
        raise InputError("the dataset has no images to use as input")
    chosen = [paths[i % len(paths)] for i in range(batch_size)]
    return preprocess_batch([load_image(p) for p in chosen], preprocess).astype(engine.input.dtype)


__all__ = ["RunOptions", "images_batch", "measure_cell"]
