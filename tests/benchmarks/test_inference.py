"""pytest-benchmark suite on the demo bundle: session run (batch 1, 8), preprocessing, end-to-end predict.

Kept out of the default test run (pyproject addopts ignore tests/benchmarks); ``nox -s perf`` runs it
and saves pytest-benchmark's JSON to reports/current/benchmark.json, which
``pytest tests/benchmarks --benchmark-compare=… --benchmark-compare-fail=median:10%`` can gate on.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize("batch_size", [1, 8])
def test_session_run(benchmark: Any, perf_engine: Any, batch_size: int) -> None:
    """One ``session.run`` of the fp32 variant on a seeded random batch (what ``bench run`` times)."""
    if perf_engine.input.fixed_batch not in (None, batch_size):
        pytest.skip(f"the model's batch axis is fixed to {perf_engine.input.fixed_batch}")
    call = perf_engine.timed_call(perf_engine.random_batch(batch_size, 0), io_binding=False)
    benchmark.extra_info.update(model=str(perf_engine.model_path), batch_size=batch_size, provider="cpu")
    out = benchmark(call)
    assert out[0].shape[0] == batch_size


def test_preprocess(benchmark: Any, perf_bundle: Any, perf_engine: Any, image_bytes: bytes) -> None:
    """Decoded image → normalised CHW tensor (resize, rescale, normalise) per preprocessor_config.json."""
    from bench.bundle import Bundle
    from bench.preprocess import decode_image, to_tensor

    cfg = Bundle.discover(perf_bundle).preprocess_config(perf_engine.input.image_hw())
    image = decode_image(image_bytes)
    tensor = benchmark(to_tensor, image, cfg)
    assert tensor.shape == (3, cfg.height, cfg.width)


def test_end_to_end_predict(benchmark: Any, perf_bundle: Any, perf_engine: Any, image_bytes: bytes) -> None:
    """Bytes → decode → preprocess → run → probabilities: one image, as the detect service does it."""
    from bench.bundle import Bundle
    from bench.preprocess import decode_image, to_tensor

    cfg = Bundle.discover(perf_bundle).preprocess_config(perf_engine.input.image_hw())

    def predict() -> Any:
        return perf_engine.predict_proba(to_tensor(decode_image(image_bytes), cfg)[None])

    probs = benchmark(predict)
    assert probs.shape[0] == 1 and abs(float(probs.sum()) - 1.0) < 1e-5
