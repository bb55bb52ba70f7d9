"""The detect service against cheap-to-send, costly-to-decode uploads, slow clients, and leaks of internals.

Every test runs a real uvicorn server on 127.0.0.1 (in this process, or ``bench serve`` in a subprocess)
with small limits, so each hostile case is small and quick while crossing the same lines as the
8000×8000 uploads of tests/benchmarks/service_hostile.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hostile
import httpx
import pytest
from served import closed_by_server, connect, serve, stop, wait_line

from bench.faults import ENV_VAR
from bench.service import ServiceConfig
from bench.service.connections import EVICTABLE_AFTER_S, RateLimitFilter
from bench.service.decoding import CHEAP_PIXELS, DecodePool

from cli import run_bench
from models import make_bundle

BUDGET = 1_000_000  # --max-pixels of the module's server: 1000×1000


@pytest.fixture(scope="module")
def svc(module_bundle: Path, service_starter: Any) -> Iterator[Any]:
    running = service_starter(
        ServiceConfig(model_dir=module_bundle, max_pixels=BUDGET, max_batch_pixels=3 * BUDGET, max_batch_files=8)
    )
    yield running
    running.stop()


@pytest.fixture
def client(svc: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        yield c


def detect(client: httpx.Client, data: bytes, name: str = "x") -> httpx.Response:
    return client.post("/detect", files={"file": (name, data)})


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    return body


# --- 1. decode budget ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [hostile.webp_lossless, hostile.png16, hostile.tiff32, lambda side: hostile.tiff32(side, "I")],
    ids=["webp_lossless", "png16", "tiff32f", "tiff32i"],
)
def test_uploads_over_the_pixel_budget_are_refused_unread(client: httpx.Client, svc: Any, make: Any) -> None:
    cpu0 = time.process_time()
    body = error_of(detect(client, make(1200)), 413)  # 1.44 MP against 1 MP
    assert body["error"] == "image_too_large" and "--max-pixels" in body["detail"]
    assert time.process_time() - cpu0 < 0.5  # this process is the server too: nothing was decoded
    assert detect(client, make(900)).status_code == 200  # under the budget: decoded, no float64 copy


def test_a_large_jpeg_is_counted_at_its_reduced_decode_scale(client: httpx.Client) -> None:
    """12 MP from a camera decodes at 1/4 scale (0.75 MP): inside a 1 MP budget."""
    assert detect(client, hostile.photo_jpeg(4000, 3000)).status_code == 200


@pytest.mark.parametrize(
    "data", [hostile.jpeg_header_patched(8000), hostile.png_short_idat(900)], ids=["jpeg_header", "png_idat"]
)
def test_data_shorter_than_its_header_claims_is_400(client: httpx.Client, data: bytes) -> None:
    body = error_of(detect(client, data), 400)
    assert body["error"] == "bad_image" and "ends early" in body["detail"]


def test_batch_pixel_budget(client: httpx.Client) -> None:
    image = hostile.webp_lossless(900)  # 0.81 MP each; the batch budget is 3 MP
    r = client.post("/detect/batch", files=[("files", (f"{i}.webp", image)) for i in range(4)])
    body = error_of(r, 413)
    assert body["error"] == "batch_too_large" and "--max-batch-pixels" in body["detail"]
    r = client.post("/detect/batch", files=[("files", (f"{i}.webp", image)) for i in range(3)])
    assert r.status_code == 200 and r.json()["stats"]["ok"] == 3
    # an image over the per-image budget fails alone, the rest of the batch is answered
    r = client.post("/detect/batch", files=[("files", ("big.webp", hostile.webp_lossless(1200))), ("files", image)])
    assert [x["status"] for x in r.json()["results"]] == [413, 200]


def test_one_request_never_holds_every_decode_worker() -> None:
    """A batch runs at most workers - 1 decodes at once, so the next request's decode starts at once."""

    async def scenario() -> tuple[int, bool]:
        pool = DecodePool(3)
        gate = threading.Event()
        running, peak = 0, 0
        lock = threading.Lock()

        def blocked_decode() -> None:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            gate.wait(10)
            with lock:
                running -= 1

        costly = CHEAP_PIXELS + 1
        jobs = [lambda: pool.run(blocked_decode, cost=costly) for _ in range(16)]
        batch = asyncio.create_task(pool.map(jobs))
        await asyncio.sleep(0.2)
        # runs while the batch is blocked: a costly decode on the worker left over, a cheap one on its own lane
        other = await asyncio.wait_for(pool.run(lambda: not gate.is_set(), cost=costly), 5)
        cheap = await asyncio.wait_for(pool.run(lambda: not gate.is_set(), cost=CHEAP_PIXELS), 5)
        gate.set()
        await batch
        pool.shutdown()
        return peak, other and cheap

    peak, others_ran_during_batch = asyncio.run(scenario())
    assert peak == 2 and others_ran_during_batch


def test_queued_decode_work_is_bounded_by_its_cost_in_pixels() -> None:
    pool = DecodePool(2, max_queued_pixels=10 * CHEAP_PIXELS)
    with pool.admit(6 * CHEAP_PIXELS) as first, pool.admit(CHEAP_PIXELS) as cheap:
        with pool.admit(6 * CHEAP_PIXELS) as second:
            assert first and cheap and not second
        assert pool.queued_pixels == 6 * CHEAP_PIXELS
    assert pool.queued_pixels == 0


# --- 2. connections -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(module_bundle: Path, service_starter: Any) -> Iterator[Any]:
    running = service_starter(
        ServiceConfig(model_dir=module_bundle, header_timeout_s=0.5, keep_alive_s=1, limit_concurrency=12)
    )
    yield running
    running.stop()


def test_a_request_head_must_arrive_in_time(guarded: Any) -> None:
    dropped = guarded.metric("bench_service_connections_dropped_total", reason="header_timeout")
    partial, silent = connect(guarded.url), connect(guarded.url)
    partial.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert closed_by_server(partial, 5) and closed_by_server(silent, 5)
    assert guarded.metric("bench_service_connections_dropped_total", reason="header_timeout") >= dropped + 2


def test_idle_keep_alive_connections_close(guarded: Any) -> None:
    sock = connect(guarded.url)
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert closed_by_server(sock, 5)


@pytest.mark.slow
def test_idle_connections_make_room_and_busy_ones_get_503(guarded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    held = [connect(guarded.url) for _ in range(40)]  # more than limit_concurrency
    for sock in held[:30]:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    time.sleep(EVICTABLE_AFTER_S + 0.1)  # a connection that just opened is never closed to make room
    try:
        assert httpx.get(guarded.url + "/health/live", timeout=5).status_code == 200
        assert guarded.metric("bench_service_connections_dropped_total", reason="evicted") >= 20
    finally:
        for sock in held:
            sock.close()
    monkeypatch.setenv(ENV_VAR, json.dumps({"service_delay_ms": 1500}))  # every inference now takes 1.5 s
    limit = guarded.service.config.limit_concurrency
    for burst in range(3):  # uvicorn's own 503 closed the connection unread: resets, mostly from the 2nd burst on
        if burst:
            time.sleep(guarded.service.config.keep_alive_s + 0.5)  # as the issue did: a pause, then a new client
        statuses, probe = asyncio.run(_burst(guarded.url, limit + 4))
        assert statuses == {200: limit, 503: 4}
        assert probe == {"connects": 1, "detect": 503, "live": 200}


async def _burst(url: str, n: int) -> tuple[dict[int, int], dict[str, int]]:
    """``n`` concurrent uploads from a new client; while they run, an upload then liveness on one connection.

    Every answer is a 200 or the service's JSON 503 with Retry-After (``_overloaded``). Returns the counts
    per status, and the probe's statuses and TCP connects (1: its connection outlived its 503).
    """
    jpeg = hostile.photo_jpeg(64, 48)
    connects = 0

    async def count_connects(event: str, info: dict[str, Any]) -> None:
        nonlocal connects
        connects += event == "connection.connect_tcp.complete"

    async def detect(client: httpx.AsyncClient, **extensions: Any) -> int:
        r = await client.post("/detect", files={"file": ("a.jpg", jpeg)}, extensions=extensions)
        return r.status_code if r.status_code == 200 else _overloaded(r)

    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as burst,
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as one,
    ):
        uploads = [asyncio.create_task(detect(burst)) for _ in range(n)]
        await asyncio.wait(uploads, return_when=asyncio.FIRST_COMPLETED)  # the refused, at once; the rest: 1.5 s
        probe = {"detect": await detect(one, trace=count_connects)}  # the limit is still in flight
        probe["live"] = (await one.get("/health/live", extensions={"trace": count_connects})).status_code
        probe["connects"] = connects
        statuses = await asyncio.gather(*uploads)
    return {code: statuses.count(code) for code in sorted(set(statuses))}, probe


def _overloaded(r: httpx.Response) -> int:
    body = error_of(r, 503)
    assert body["error"] == "overloaded" and "--limit-concurrency" in body["detail"], body
    assert r.headers["content-type"] == "application/json" and int(r.headers["retry-after"]) >= 0
    return r.status_code


def test_log_floods_are_rate_limited() -> None:
    now = [0.0]
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("bench.test.flood")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.addFilter(RateLimitFilter(interval_s=10, clock=lambda: now[0]))
    for i in range(1000):
        now[0] = i * 0.01  # 1000 errors in 10 s
        logger.error("socket.accept() out of system resource")
    logger.error("another message")
    now[0] = 10.5
    logger.error("socket.accept() out of system resource")
    assert len(records) == 3
    assert "999 more like this" in records[-1].getMessage()


@pytest.mark.slow
def test_slowloris_does_not_stop_liveness_under_a_low_open_file_limit(tmp_path: Path) -> None:
    """300 half-sent heads and silent sockets against 256 open files: /health/live and /detect still answer."""
    proc = serve(["--model-dir", str(make_bundle(tmp_path / "m"))], nofile=256)
    socks: list[socket.socket] = []
    try:
        line, _ = wait_line(proc, "bench serve: ready on ")
        url = line.split()[4]
        for i in range(300):
            sock = connect(url)
            if i % 2:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(sock)
        for _ in range(5):
            assert httpx.get(url + "/health/live", timeout=3).status_code == 200
        r = httpx.post(url + "/detect", files={"file": ("a.jpg", hostile.photo_jpeg(64, 48))}, timeout=3)
        assert r.status_code == 200
    finally:
        for sock in socks:
            sock.close()
        stop(proc)


# --- 3. disconnects and drain ------------------------------------------------------------------------------


def test_a_client_gone_mid_upload_is_499_not_500(svc: Any) -> None:
    before_500 = svc.metric("bench_service_requests_total", endpoint="/detect", status="500")
    before_499 = svc.metric("bench_service_requests_total", endpoint="/detect", status="499")
    sock = connect(svc.url)
    sock.sendall(
        b"POST /detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        + b"\xff\xd8\xff"
        * 1000
    )
    time.sleep(0.2)
    sock.close()
    deadline = time.monotonic() + 5
    while svc.metric("bench_service_requests_total", endpoint="/detect", status="499") == before_499:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.05)
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="500") == before_500


@pytest.mark.slow
def test_requests_running_at_the_graceful_deadline_get_a_json_503(
    module_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.service.server import bind_socket, build_server, url_of

    sock = bind_socket("127.0.0.1", 0)
    server: Any = build_server(ServiceConfig(model_dir=module_bundle), graceful_timeout_s=0.5)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock)
    deadline = time.monotonic() + 30
    while not server.started or httpx.get(url + "/health/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    monkeypatch.setenv(ENV_VAR, json.dumps({"service_delay_ms": 5000}))
    result: dict[str, httpx.Response] = {}
    client = threading.Thread(
        target=lambda: result.setdefault(
            "r", httpx.post(url + "/detect", files={"file": ("a.jpg", hostile.photo_jpeg(64, 48))}, timeout=30)
        )
    )
    client.start()
    time.sleep(0.5)  # inside its 5 s inference
    server.should_exit = True
    client.join(timeout=30)
    thread.join(timeout=30)
    r = result["r"]
    assert r.status_code == 503 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "shutting_down" and r.headers["retry-after"]


@pytest.mark.slow
def test_sigterm_while_the_model_loads_exits_at_once(tmp_path: Path) -> None:
    proc = serve(
        ["--model-dir", str(make_bundle(tmp_path / "m"))], env={ENV_VAR: json.dumps({"service_delay_ms": 60_000})}
    )
    try:
        line, _ = wait_line(proc, "bench serve: listening on ")
        url = line.split()[4].rstrip(";")
        deadline = time.monotonic() + 30
        while True:  # serving: the model is loading, its warm-up inference sleeping 60 s
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health/ready", timeout=2).status_code == 503:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 10
    finally:
        stop(proc)


# --- 4. no leaks of internals ----------------------------------------------------------------------------------


def test_unexpected_errors_are_generic_with_the_request_id(
    svc: Any, client: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("secret at 0x7f00deadbeef in /srv/models/private")

    monkeypatch.setattr(svc.service.batcher, "submit_many", broken)
    with caplog.at_level(logging.ERROR, logger="bench.service"):
        r = detect(client, hostile.photo_jpeg(64, 48))
    body = error_of(r, 500)
    assert body["error"] == "internal_error" and body["request_id"] in body["detail"]
    assert "secret" not in r.text and "0x7f" not in r.text and "/srv" not in r.text
    assert any(body["request_id"] in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_health_hides_paths_and_pid_unless_exposed(service_factory: Any, tmp_path: Path) -> None:
    missing = tmp_path / "private" / "models"
    svc = service_factory(ServiceConfig(model_dir=missing), wait_ready=False)
    deadline = time.monotonic() + 30
    while (body := httpx.get(svc.url + "/health").json())["model_state"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "does not exist" in body["reason"] and str(tmp_path) not in body["reason"]
    assert body["process"]["pid"] is None
    detail = httpx.post(svc.url + "/detect", files={"file": ("a.jpg", b"x")}).json()["detail"]
    assert str(tmp_path) not in detail and "…/models" in detail
    exposed = service_factory(ServiceConfig(model_dir=make_bundle(tmp_path / "m"), expose_paths=True))
    body = httpx.get(exposed.url + "/health").json()
    assert body["model"]["file"] == str(tmp_path / "m" / "onnx" / "model.onnx") and body["process"]["pid"] > 0


def test_no_docs_by_default(client: httpx.Client, service_factory: Any, module_bundle: Path) -> None:
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200
    with_docs = service_factory(ServiceConfig(model_dir=module_bundle, docs=True))
    assert httpx.get(with_docs.url + "/docs").status_code == 200


def test_only_allowed_host_names_are_answered(client: httpx.Client, service_factory: Any, module_bundle: Path) -> None:
    for host in ("localhost:1234", "127.0.0.1", "[::1]:8007"):
        assert client.get("/health/live", headers={"host": host}).status_code == 200, host
    body = error_of(client.get("/health", headers={"host": "rebound.attacker.example"}), 400)
    assert body["error"] == "host_not_allowed" and "--allowed-hosts" in body["detail"]
    anyone = service_factory(ServiceConfig(model_dir=module_bundle, allowed_hosts=("*",)))
    assert httpx.get(anyone.url + "/health/live", headers={"host": "any.example"}).status_code == 200


def test_nosniff_and_escaped_names(client: httpx.Client) -> None:
    name = "<script>alert(1)</script>&.jpg"
    r = client.post("/detect/batch", files=[("files", (name, hostile.photo_jpeg(64, 48)))])
    assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert b"<script>" not in r.content and b"&" not in r.content
    assert r.json()["results"][0]["filename"] == name  # the same name once parsed
    assert client.get("/nope").headers["x-content-type-options"] == "nosniff"


def test_decoder_messages_carry_no_addresses(client: httpx.Client) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "TIFF", compression="tiff_deflate")
    body = error_of(detect(client, buf.getvalue()[:64]), 400)
    assert not re.search(r"0x[0-9a-fA-F]{6,}", body["detail"]), body


# --- 5. contract --------------------------------------------------------------------------------------------


def test_several_file_parts_are_422(client: httpx.Client) -> None:
    jpeg = hostile.photo_jpeg(64, 48)
    for count in (2, 6):
        r = client.post("/detect", files=[("file", (f"{i}.jpg", jpeg)) for i in range(count)])
        body = error_of(r, 422)
        assert body["error"] == "multiple_files" and "/detect/batch" in body["detail"]


def test_openapi_lists_statuses_and_min_items(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/detect", "/detect/batch"):
        assert {"200", "400", "413", "415", "422", "500", "503"} <= set(spec["paths"][path]["post"]["responses"])
    schema = spec["paths"]["/detect/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["files"]["minItems"] == 1
    assert {"400", "503"} <= set(spec["paths"]["/health/ready"]["get"]["responses"])


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--provider", "gpu"], "--provider must be one of cpu, cuda, tensorrt, got 'gpu'"),
        (["--variant", "fp64"], "available: fp32"),
    ],
)
def test_serve_refuses_unknown_provider_or_variant_at_once(tmp_path: Path, args: list[str], expect: str) -> None:
    bundle = make_bundle(tmp_path / "m")
    out = run_bench("serve", "--model-dir", str(bundle), "--port", "0", *args, timeout=60)
    assert out.returncode == 2 and expect in out.stderr, out.stderr


def _resolver(*addresses: str) -> Any:
    def getaddrinfo(name: str, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in addresses]

    return getaddrinfo


@pytest.mark.parametrize(
    "addresses, loopback",
    [(("127.0.0.1",), True), (("::1", "127.0.0.1"), True), (("127.0.0.1", "192.0.2.7"), False), ((), False)],
)
def test_load_targets_under_localhost_are_resolved(
    monkeypatch: pytest.MonkeyPatch, addresses: tuple[str, ...], loopback: bool
) -> None:
    """``app.localhost`` is loopback only where the resolver says so (the resolver is faked: no DNS traffic)."""
    from bench.load import spec

    monkeypatch.setattr(spec.socket, "getaddrinfo", _resolver(*addresses))
    assert spec.is_loopback("app.localhost") is loopback
    assert spec.is_loopback("localhost") and spec.is_loopback("127.0.0.9")  # literals: never resolved
    assert not spec.is_loopback("example.com")
