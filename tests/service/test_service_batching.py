"""Dynamic batching and backpressure, observed from outside: response fields and the /metrics histogram."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.faults import ENV_VAR
from bench.service import ServiceConfig


async def _concurrent_detects(url: str, data: bytes, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*[client.post("/detect", files={"file": (f"{i}.jpg", data)}) for i in range(n)])


@pytest.fixture
def slow_inference(monkeypatch: pytest.MonkeyPatch) -> float:
    """Each inference call sleeps 150 ms more (bench.faults), so concurrent requests must queue up."""
    monkeypatch.setenv(ENV_VAR, json.dumps({"service_delay_ms": 150}))
    return 0.150


def test_concurrent_requests_share_a_batch(
    service_factory: Any, module_bundle: Path, images: Any, slow_inference: float
) -> None:
    svc = service_factory(ServiceConfig(model_dir=module_bundle, max_batch=16, max_delay_ms=20))
    responses = asyncio.run(_concurrent_detects(svc.url, images.jpeg(), 8))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1, sizes
    probs = [r.json()["fake_probability"] for r in responses]
    # the same image gets the same answer whatever batch it ran in (up to float32 kernel rounding)
    assert max(probs) - min(probs) < 1e-6, probs
    batches = svc.metric("bench_service_batch_size_count")
    assert svc.metric("bench_service_batch_size_sum") == 8
    assert batches < 8, "eight concurrent requests ran as eight separate inference calls"
    assert svc.metric("bench_service_batch_size_bucket", le="1.0") < batches
    # the slow-server hook is in the inference path: every request waited at least one delay
    assert all(r.json()["processing_time_ms"]["inference"] >= slow_inference * 1000 for r in responses)


def test_max_batch_one_turns_batching_off(
    service_factory: Any, module_bundle: Path, images: Any, slow_inference: float
) -> None:
    svc = service_factory(ServiceConfig(model_dir=module_bundle, max_batch=1))
    responses = asyncio.run(_concurrent_detects(svc.url, images.jpeg(), 4))
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.json()["batch_size"] for r in responses} == {1}
    assert svc.metric("bench_service_batch_size_count") == 4
    assert svc.metric("bench_service_batch_size_bucket", le="1.0") == 4


def test_full_queue_answers_503_with_retry_after(
    service_factory: Any, module_bundle: Path, images: Any, slow_inference: float
) -> None:
    svc = service_factory(ServiceConfig(model_dir=module_bundle, max_batch=1, max_queue=2, retry_after_s=2))
    data = images.jpeg()
    responses = asyncio.run(_concurrent_detects(svc.url, data, 8))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2"
            body = r.json()
            assert body["error"] == "overloaded" and "queue is full" in body["detail"]
            assert body["request_id"] == r.headers["x-request-id"]
    # a batch that does not fit is refused whole, never half-queued
    over = [("files", (f"{i}.jpg", data)) for i in range(3)]
    assert httpx.post(svc.url + "/detect/batch", files=over, timeout=30).status_code == 503
    # backpressure is temporary: once drained, requests succeed again
    assert httpx.post(svc.url + "/detect", files={"file": ("a.jpg", data)}, timeout=30).status_code == 200
    assert svc.metric("bench_service_queue_depth") == 0
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="503") == codes.count(503)


def test_a_lone_request_does_not_wait_for_company(service_factory: Any, module_bundle: Path, images: Any) -> None:
    """The batcher waits up to max_delay only while another request is on its way."""
    svc = service_factory(ServiceConfig(model_dir=module_bundle, max_batch=16, max_delay_ms=400))
    with httpx.Client(base_url=svc.url, timeout=30) as client:
        for _ in range(3):
            body = client.post("/detect", files={"file": ("a.jpg", images.jpeg())}).json()
            assert body["batch_size"] == 1
            assert body["processing_time_ms"]["queue"] < 200, body["processing_time_ms"]
