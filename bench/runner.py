"""Measure one cell: open an Engine, warm up, run the timed loop under the resource sampler.

Whatever goes wrong on the provider's side becomes the cell's status and reason; only input errors
(bad flags, a broken model file) propagate, so ``bench run`` can exit 2 and a matrix can record them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.engine import Engine, ModelLoadError, ProviderUnavailable, SessionSpec, first_line
from bench.errors import InputError
from bench.providers import is_gpu
from bench.results import CellResult, ModelInfo
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_info(path: Path) -> ModelInfo:
    """File name, size and sha256 of a model file, plus its build recipe when a sidecar records one."""
    recipe = None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            recipe = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            recipe = None
    size_mb = round(path.stat().st_size / 1e6, 3)
    return ModelInfo(file=path.name, size_mb=size_mb, sha256=file_sha256(path), recipe=recipe)


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
    except ProviderUnavailable as exc:
        return _not_run(cell, "unavailable", str(exc))
    except ModelLoadError as exc:
        return _not_run(cell, "unavailable", str(exc))
    except InputError:
        raise
    except Exception as exc:  # an inference that throws: the cell failed, the run goes on
        return _not_run(cell, "failed", f"{provider}: inference failed — {first_line(exc)}")
    stats = LatencyStats.from_samples(samples)
    cell.samples_ms = [round(s, 5) for s in samples]
    cell.latency_ms = {k: round(v, 5) if isinstance(v, float) else v for k, v in stats.as_dict().items()}
    cell.throughput_ips = round(options.batch_size / (stats.mean / 1000.0), 3)
    cell.memory = sampler.stats().as_dict()
    if evaluate is not None:
        cell.accuracy = evaluate(engine)
    return cell


def _not_run(cell: CellResult, status: str, reason: str) -> CellResult:
    cell.status, cell.reason = status, reason
    return cell


def images_batch(paths: Sequence[Path], batch_size: int, engine: Engine, preprocess: Any) -> np.ndarray:
    """A real image batch: the first ``batch_size`` images of a dataset (cycled), preprocessed."""
    from bench.preprocess import load_image, preprocess_batch

    if not paths:
        raise InputError("the dataset has no images to use as input")
    chosen = [paths[i % len(paths)] for i in range(batch_size)]
    return preprocess_batch([load_image(p) for p in chosen], preprocess).astype(engine.input.dtype)


__all__ = ["RunOptions", "images_batch", "measure_cell", "model_info"]


def run_cells(
    bundle: Any,
    variants: Sequence[str],
    providers: Sequence[str],
    options: RunOptions,
    dataset: Path | None = None,
    allow_build: bool = True,
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> Any:
    """Measure each variant × provider in this process (``bench run``); returns a RunResult."""
    from bench import datasets, environment
    from bench.results import RunResult
    from bench.variants import ensure_variant

    paths = {v: ensure_variant(bundle, v, allow_build=allow_build, log=log) for v in variants}
    images: list[Path] = datasets.image_files(dataset) if dataset is not None else []
    if dataset is not None and not images:
        raise InputError(f"dataset {dataset} holds no images")
    result = RunResult(
        environment=environment.fingerprint(options.session.provider_options.device_id),
        config={"command": "run", "model_dir": str(bundle.root), "variants": list(variants),
                "providers": list(providers), **options.as_config()},
        dataset=datasets.fingerprint(dataset, [(p, None) for p in images]) if dataset is not None else None,
    )
    for variant in variants:
        for provider in providers:
            feed = None
            if images:
                def feed(engine: Engine, _images: list[Path] = images) -> np.ndarray:
                    fallback = engine.input.image_hw()
                    return images_batch(_images, options.batch_size, engine, bundle.preprocess_config(fallback))
            tick = progress(f"{variant}/{provider}", options.loop.iterations) if progress else None
            result.cells.append(measure_cell(paths[variant], variant, provider, options, input_batch=feed,
                                             progress=(lambda i, _ms, t=tick: t(1)) if tick else None))
    return result
