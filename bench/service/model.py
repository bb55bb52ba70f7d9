"""The served model: load (bundle → variant → Engine → warm-up), run a batch, apply the decision rule.

Everything here runs on the service's single inference thread; the event loop never touches ORT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends import backend_name, open_engine
from bench.bundle import Bundle, positive_index, resolve_model_dir
from bench.engine import ModelLoadError, ProviderUnavailable, SessionSpec, first_line
from bench.errors import BenchError
from bench.faults import service_delay_s
from bench.metrics import decide as decide_rows
from bench.preprocess import PreprocessConfig
from bench.providers import ProviderOptions
from bench.service.config import ServiceConfig
from bench.variants import ensure_variant


class ModelNotLoaded(RuntimeError):
    """The model could not be loaded; the message is the one-line reason readiness reports."""


@dataclass
class LoadedModel:
    """A ready model: its engine, labels, positive class and preprocessing."""

    engine: Any  # bench.engine.Engine or bench.torch_engine.TorchEngine (bench.backends.open_engine)
    model_path: Path
    variant: str
    provider: str
    labels: dict[int, str]
    positive: int
    preprocess: PreprocessConfig
    max_batch: int  # the configured max batch, capped by a fixed batch axis
    load_ms: float = 0.0
    warmup_ms: float = 0.0
    build_log: list[str] = field(default_factory=list)
    backend: str = "onnxruntime"  # or "pytorch": what serves (bench.backends.backend_name)
    fallback_reason: str | None = None  # why the configured variant is not the one serving (--fallback)

    @property
    def positive_label(self) -> str:
        return self.labels[self.positive]

    @property
    def providers_effective(self) -> list[str]:
        return list(self.engine.providers_effective)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for ``batch`` (float64 [n, k]); pads to a fixed batch axis when the model has one.

        Honours the test-only ``service_delay_ms`` fault (bench.faults): each call sleeps that much more.
        """
        n = len(batch)
        fixed = self.engine.input.fixed_batch
        if fixed is not None and n < fixed:
            pad = np.zeros((fixed - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        probs = self.engine.predict_proba(batch)[:n]
        delay = service_delay_s()
        if delay > 0:
            time.sleep(delay)
        return probs


def load_model(config: ServiceConfig, log: Callable[[str], None] | None = None) -> LoadedModel:
    """Load and warm up the configured model, else the ``fallback`` one; raise ModelNotLoaded with the reason."""
    build_log: list[str] = []

    def note(line: str) -> None:
        build_log.append(line)
        if log is not None:
            log(line)

    try:
        return _load_variant(config, config.variant, note, build_log)
    except ModelNotLoaded as exc:
        if config.fallback is None:
            raise
        reason = str(exc)
    note(f"warning: {config.variant} could not load ({reason}); serving the fallback {config.fallback}")
    try:
        model = _load_variant(config, config.fallback, note, build_log)
    except ModelNotLoaded as exc:
        raise ModelNotLoaded(
            f"{config.variant} could not load ({reason}), nor the fallback {config.fallback} ({exc})"
        ) from exc
    model.fallback_reason = f"{config.variant} could not load: {reason}"
    return model


def _load_variant(
    config: ServiceConfig, variant: str, note: Callable[[str], None], build_log: list[str]
) -> LoadedModel:
    """Load and warm up ``variant`` as ``config`` says; raise ModelNotLoaded with the reason on any failure."""
    start = time.perf_counter()
    try:
        bundle = Bundle.discover(resolve_model_dir(config.model_dir))
        path = ensure_variant(bundle, variant, allow_build=config.allow_build, log=note)
        spec = SessionSpec(threads=config.threads, provider_options=ProviderOptions(device_id=config.device_id))
        engine = open_engine(path, variant, config.provider, spec)
    except (BenchError, ProviderUnavailable, ModelLoadError) as exc:
        raise ModelNotLoaded(str(exc)) from exc
    except Exception as exc:  # anything else still leaves the server up, with the reason
        raise ModelNotLoaded(f"{type(exc).__name__}: {exc}") from exc
    load_ms = (time.perf_counter() - start) * 1000

    labels = bundle.labels(engine.num_classes)
    if engine.num_classes is not None and labels and len(labels) != engine.num_classes:
        raise ModelNotLoaded(
            f"config.json id2label has {len(labels)} labels but {path.name} outputs {engine.num_classes} classes"
        )
    positive, why = positive_index(labels, config.positive_label)
    if positive is None:
        raise ModelNotLoaded(f"cannot decide what is fake: {why}")
    preprocess = bundle.preprocess_config(fallback_hw=engine.input.image_hw())
    fixed = engine.input.fixed_batch
    model = LoadedModel(
        engine=engine,
        model_path=path,
        variant=variant,
        provider=config.provider,
        labels=labels,
        positive=positive,
        preprocess=preprocess,
        max_batch=min(config.max_batch, fixed or config.max_batch),
        load_ms=load_ms,
        build_log=build_log,
        backend=backend_name(variant),
    )
    start = time.perf_counter()
    try:  # readiness needs one real inference; warm the largest batch too, so the first full batch is not cold
        for n in sorted({1, model.max_batch}):
            shape = (n, 3, preprocess.height, preprocess.width)
            probs = model.infer(np.zeros(shape, dtype=np.float32))
            if probs.shape != (n, len(labels)) or not np.all(np.isfinite(probs)):
                raise ModelNotLoaded(
                    f"warm-up inference returned shape {probs.shape} (expected {(n, len(labels))}) "
                    "or non-finite probabilities"
                )
    except ModelNotLoaded:
        raise
    except Exception as exc:
        raise ModelNotLoaded(
            f"warm-up inference failed on {path.name} with a {preprocess.height}×{preprocess.width} "
            f"input: {first_line(exc)}"
        ) from exc
    model.warmup_ms = (time.perf_counter() - start) * 1000
    return model


def decide(probs: np.ndarray, labels: dict[int, str], positive: int, threshold: float) -> dict[str, Any]:
    """The evaluator's rule (CLI.md): fake ⇔ p(fake) ≥ threshold; otherwise the most probable other class."""
    p_fake = float(probs[positive])
    index = int(decide_rows(np.asarray(probs)[None, :], positive, threshold)[0])
    is_fake = index == positive
    return {
        "label": labels[index],
        "is_deepfake": bool(is_fake),
        "fake_probability": p_fake,
        "threshold": threshold,
        "confidence": float(probs[index]),
        "scores": {labels[i]: float(probs[i]) for i in range(len(probs))},
    }
