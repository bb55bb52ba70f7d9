"""Endpoints of the detect service against a real uvicorn server: shapes, the decision rule, formats, errors."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.service import ServiceConfig

SEED_HEALTH_KEYS = {"status", "service", "model_loaded", "gpu_available", "memory_usage"}
MEMORY_KEYS = {"gpu_memory_percent", "gpu_memory_used_mb", "gpu_memory_total_mb"}


@pytest.fixture(scope="module")
def svc(module_bundle: Path, service_starter: Any) -> Any:
    running = service_starter(
        ServiceConfig(model_dir=module_bundle, max_upload_mb=0.25, max_batch_files=4, max_batch_upload_mb=0.5)
    )
    yield running
    running.stop()


@pytest.fixture
def client(svc: Any) -> httpx.Client:
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        yield c


def reference_probs(bundle: Path, data: bytes) -> np.ndarray:
    """What the evaluator's path (Engine + bench.preprocess) says for these bytes."""
    from bench.bundle import Bundle
    from bench.engine import Engine
    from bench.preprocess import decode_image, to_tensor

    b = Bundle.discover(bundle)
    engine = Engine(b.variants["fp32"], "cpu")
    x = to_tensor(decode_image(data), b.preprocess_config())
    return engine.predict_proba(x[None])[0]


def assert_error(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"error", "detail", "request_id"}, body
    assert body["detail"] and isinstance(body["detail"], str)
    assert body["request_id"] == r.headers["x-request-id"]
    if error is not None:
        assert body["error"] == error, body
    return body


def test_health_has_the_seed_shape_plus_extras(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= SEED_HEALTH_KEYS
    assert body["status"] == "healthy" and body["service"] == "Deepfake Detection" and body["model_loaded"] is True
    assert set(body["memory_usage"]) == MEMORY_KEYS
    if not body["gpu_available"]:  # no GPU: nulls with the reason, never zeros
        assert all(v is None for v in body["memory_usage"].values())
        assert body["gpu_reason"]
    else:
        assert body["memory_usage"]["gpu_memory_total_mb"] > 0
    assert body["variant"] == "fp32" and body["provider"] == "cpu"
    assert body["providers_effective"] == ["CPUExecutionProvider"]
    assert body["uptime_s"] > 0 and isinstance(body["requests_served"], int)
    assert body["process"]["rss_mb"] > 10
    # no internals for anyone who can reach the port: no PID, no absolute path (--expose-paths shows them)
    assert body["process"]["pid"] is None
    assert body["model"]["file"] == "model.onnx"
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200


def test_detect_matches_the_evaluator_path(client: httpx.Client, images: Any, module_bundle: Path) -> None:
    data = images.jpeg(seed=21)
    before = client.get("/health").json()["requests_served"]
    r = client.post("/detect", files={"file": ("face.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["scores"]) == {"Deepfake", "Real"}
    expected = reference_probs(module_bundle, data)
    # id2label 0=Deepfake: p(fake) is column 0, not a hard-coded "index 1 = fake"
    assert body["fake_probability"] == pytest.approx(expected[0], abs=1e-6)
    assert body["scores"]["Real"] == pytest.approx(expected[1], abs=1e-6)
    assert math.isclose(sum(body["scores"].values()), 1.0, abs_tol=1e-6)
    assert body["threshold"] == 0.5
    assert body["is_deepfake"] == (expected[0] >= 0.5)
    assert body["label"] == ("Deepfake" if body["is_deepfake"] else "Real")
    assert body["confidence"] == pytest.approx(body["scores"][body["label"]])
    times = body["processing_time_ms"]
    assert set(times) >= {"decode", "preprocess", "inference", "total"}
    assert times["total"] >= times["inference"] > 0
    assert body["model"] == {"variant": "fp32", "provider": "cpu"}
    assert body["request_id"] == r.headers["x-request-id"]
    assert client.get("/health").json()["requests_served"] == before + 1


def test_incoming_request_id_is_kept(client: httpx.Client, images: Any) -> None:
    r = client.post("/detect", files={"file": ("a.png", images.png())}, headers={"X-Request-ID": "trace-42"})
    assert r.json()["request_id"] == "trace-42" == r.headers["x-request-id"]


@pytest.mark.parametrize("kind", ["png", "webp", "bmp", "tiff", "grey", "rgba", "cmyk", "png16", "gif_animated"])
def test_accepted_formats_and_modes(client: httpx.Client, images: Any, module_bundle: Path, kind: str) -> None:
    data = getattr(images, kind)()
    r = client.post("/detect", files={"file": (f"x.{kind}", data)})
    assert r.status_code == 200, r.text
    assert r.json()["fake_probability"] == pytest.approx(reference_probs(module_bundle, data)[0], abs=1e-6)


def test_animated_gif_uses_the_first_frame(client: httpx.Client, images: Any) -> None:
    first = images.picture(seed=8).convert("P")
    buf = io.BytesIO()
    first.save(buf, "GIF")
    single = client.post("/detect", files={"file": ("one.gif", buf.getvalue())}).json()
    animated = client.post("/detect", files={"file": ("many.gif", images.gif_animated())}).json()
    assert animated["fake_probability"] == pytest.approx(single["fake_probability"], abs=1e-9)


def test_exif_orientation_is_applied(client: httpx.Client, images: Any) -> None:
    def p_fake(data: bytes) -> float:
        r = client.post("/detect", files={"file": ("x.jpg", data)})
        assert r.status_code == 200, r.text
        return r.json()["fake_probability"]

    buf = io.BytesIO()
    images.halves().transpose(Image.Transpose.ROTATE_270).save(buf, "JPEG", quality=95)  # what orientation 6 means
    upright = p_fake(buf.getvalue())
    buf = io.BytesIO()
    images.halves().save(buf, "JPEG", quality=95)
    sideways = p_fake(buf.getvalue())
    tagged = p_fake(images.exif_rotated(6))
    assert abs(upright - sideways) > 1e-3, "test image does not tell orientations apart"
    assert tagged == pytest.approx(upright, abs=abs(upright - sideways) / 10)


def test_batch_keeps_order_and_isolates_failures(client: httpx.Client, images: Any, module_bundle: Path) -> None:
    files = [
        ("files", ("a.jpg", images.jpeg(seed=31))),
        ("files", ("b.bin", images.random_bytes())),
        ("files", ("c.png", images.truncated_png())),
        ("files", ("d.png", images.png(seed=32))),
    ]
    r = client.post("/detect/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3]
    assert [x["filename"] for x in results] == ["a.jpg", "b.bin", "c.png", "d.png"]
    assert [x["ok"] for x in results] == [True, False, False, True]
    assert [x["status"] for x in results] == [200, 415, 400, 200]
    assert results[1]["error"] == "unsupported_media_type" and results[1]["detail"]
    assert results[2]["error"] == "bad_image"
    for i, data in ((0, files[0][1][1]), (3, files[3][1][1])):
        assert results[i]["fake_probability"] == pytest.approx(reference_probs(module_bundle, data)[0], abs=1e-6)
        assert set(results[i]["scores"]) == {"Deepfake", "Real"}
    stats = body["stats"]
    assert stats["count"] == 4 and stats["ok"] == 2 and stats["failed"] == 2
    assert stats["ms_per_image"] == pytest.approx(stats["total_ms"] / 4, abs=0.01)
    assert body["request_id"] == r.headers["x-request-id"]


def _chunked_upload(total: int, name: str = "file") -> Iterator[bytes]:
    """A multipart body of ``total`` bytes, sent chunked (no Content-Length)."""
    yield (
        f'--bnd\r\nContent-Disposition: form-data; name="{name}"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff\xd8\xff"
    sent = 0
    while sent < total:
        sent += 65536
        yield b"\x00" * 65536
    yield b"\r\n--bnd--\r\n"


def test_every_bad_input_then_a_valid_request_succeeds(client: httpx.Client, images: Any, svc: Any) -> None:
    limit = svc.service.config.max_upload_bytes
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("random bytes", {"files": {"file": ("x.jpg", images.random_bytes())}}, 415, "unsupported_media_type"),
        ("html", {"files": {"file": ("x.html", images.html, "text/html")}}, 415, "unsupported_media_type"),
        ("svg", {"files": {"file": ("x.svg", images.svg, "image/svg+xml")}}, 415, "unsupported_media_type"),
        ("truncated jpeg", {"files": {"file": ("x.jpg", images.truncated_jpeg())}}, 400, "bad_image"),
        ("truncated png", {"files": {"file": ("x.png", images.truncated_png())}}, 400, "bad_image"),
        ("empty file", {"files": {"file": ("x.jpg", b"")}}, 400, "bad_image"),
        ("bomb", {"files": {"file": ("x.png", images.bomb_png())}}, 413, "image_too_large"),
        (
            "over the limit",
            {"files": {"file": ("x.jpg", b"\xff\xd8\xff" + b"\x00" * (limit + 1))}},
            413,
            "payload_too_large",
        ),
        ("no field", {"files": {"other": ("x.jpg", images.jpeg())}}, 422, "missing_field"),
        ("text field", {"data": {"file": "not a file"}}, 422, "missing_field"),
        ("no body", {}, 422, "missing_field"),
    ]
    for name, kwargs, status, error in cases:
        body = assert_error(client.post("/detect", **kwargs), status, error)
        assert name and body["detail"]
    # a chunked upload has no Content-Length: the limit counts streamed bytes and stops reading early
    multipart = {"content-type": "multipart/form-data; boundary=bnd"}
    r = client.post("/detect", content=_chunked_upload(64 * limit), headers=multipart)
    body = assert_error(r, 413, "payload_too_large")
    stopped_at = int(body["detail"].rsplit("stopped reading at ", 1)[1].rstrip(")").replace(",", ""))
    assert stopped_at < limit + 1024 * 1024 < 64 * limit  # the limit plus at most a few socket reads
    # batch endpoint
    jpeg = images.jpeg()
    assert_error(
        client.post("/detect/batch", files=[("files", (f"{i}.jpg", jpeg)) for i in range(5)]), 413, "too_many_files"
    )
    assert_error(client.post("/detect/batch", files=[("files", ("", b""))]), 400, "empty_batch")
    assert_error(client.post("/detect/batch", data={"files": ""}), 400, "empty_batch")
    assert_error(client.post("/detect/batch", files={"file": ("a.jpg", jpeg)}), 422, "missing_field")
    assert_error(
        client.post("/detect/batch", content=_chunked_upload(8 * limit * 3, "files"), headers=multipart),
        413,
        "payload_too_large",
    )
    # routing errors are JSON too
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/detect"), 405, "method_not_allowed")
    # the server survived all of it
    r = client.post("/detect", files={"file": ("ok.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert client.get("/health").json()["status"] == "healthy"
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="415") >= 3
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="413") >= 3


def test_metrics_and_openapi(client: httpx.Client, images: Any, svc: Any) -> None:
    client.post("/detect", files={"file": ("a.jpg", images.jpeg())})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in (
        "bench_service_requests_total",
        "bench_service_request_duration_seconds_bucket",
        "bench_service_batch_size_bucket",
        "bench_service_queue_depth",
        "bench_service_inference_duration_seconds_bucket",
        "bench_service_model_info",
    ):
        assert name in r.text, name
    assert svc.metric("bench_service_model_ready") == 1.0
    assert svc.metric("bench_service_model_info", variant="fp32", provider="cpu") == 1.0
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="200") >= 1
    assert svc.metric("bench_service_batch_size_count") >= 1
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/health/live", "/health/ready", "/detect", "/detect/batch", "/metrics"):
        assert path in spec["paths"], path
    detect = spec["paths"]["/detect"]["post"]
    assert "multipart/form-data" in detect["requestBody"]["content"]
    assert {"413", "415", "503"} <= set(detect["responses"])
