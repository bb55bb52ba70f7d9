"""Open the backend a variant names: ONNX Runtime for ``.onnx`` variants, eager PyTorch for ``pytorch*``.

Every place that runs a model (runner, evaluator, service, A/B) opens it through :func:`open_engine`, so a
variant is any way to run the model and all of them share the timed loop, the sampler and ``preprocess``.
Neither onnxruntime nor torch is imported until an engine is opened.
"""

from __future__ import annotations

from pathlib import Path

from bench.bundle import is_pytorch_variant
from bench.engine import Engine, SessionSpec
from bench.torch_engine import TorchEngine


def open_engine(
    model_path: str | Path,
    variant: str,
    provider: str = "cpu",
    spec: SessionSpec | None = None,
    model_sha256: str | None = None,
) -> Engine | TorchEngine:
    """An engine for ``variant`` on ``provider``: ``model_path`` is its .onnx file or, for PyTorch, its weights.

    Raises like :class:`~bench.engine.Engine`: InputError for a broken model (exit 2), ProviderUnavailable or
    ModelLoadError when this machine cannot run it (an ``unavailable`` cell). ``model_sha256`` is passed on to
    the Engine (it keys the TensorRT cache); PyTorch has no such cache.
    """
    if is_pytorch_variant(variant):
        return TorchEngine(model_path, variant, provider, spec)
    return Engine(model_path, provider, spec, model_sha256=model_sha256)


def backend_name(variant: str) -> str:
    """``pytorch`` or ``onnxruntime``: what serves a variant (the service's /health and /metrics say it)."""
    return "pytorch" if is_pytorch_variant(variant) else "onnxruntime"


__all__ = ["backend_name", "open_engine"]
