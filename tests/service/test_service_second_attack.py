"""The second attack on the detect service (issue #29, items 1–6 and the /metrics gauges of 15).

Work for clients that have gone, stalled bodies, chunk floods, slow decoders inside the pixel budget, the
503 at the concurrency limit, and memory kept after bursts. Real uvicorn servers on 127.0.0.1, real
sockets; the costly cases at the sizes of tests/benchmarks/service_hostile.py where they are quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hostile
import httpx
import psutil
import pytest
from served import closed_by_server, connect, serve, stop, wait_line

from bench.faults import ENV_VAR
from bench.service import ServiceConfig
from bench.service.connections import FREE_BODY_PIECES
from bench.service.middleware import MIN_BODY_RATE

from models import make_bundle

BUDGET = 1_000_000  # --max-pixels of the in-process server: 1000×1000


@pytest.fixture(scope="module")
def svc(module_bundle: Path, service_starter: Any) -> Iterator[Any]:
    running = service_starter(
        ServiceConfig(
            model_dir=module_bundle,
            max_pixels=BUDGET,
            body_timeout_s=1.0,
            max_pending_upload_mb=1.0,
            limit_concurrency=6,
        )
    )
    yield running
    running.stop()


def _status_line(sock: socket.socket, within_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Read one whole answer from a raw socket: status, headers (lower-case), body."""
    sock.settimeout(within_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# --- 1. work for clients that have gone ----------------------------------------------------------------


@pytest.mark.slow
def test_decodes_for_disconnected_clients_are_cancelled(tmp_path: Path) -> None:
    """40 lossless 4096² WebPs (38 bytes, ~0.2 s of CPU each), each sent on a socket closed at once: the server
    spends ≤ 50 ms of CPU per request, counts them 499, and a normal /detect still answers."""
    proc = serve(["--model-dir", str(make_bundle(tmp_path / "m"))])
    try:
        line, _ = wait_line(proc, "bench serve: ready on ")
        url = line.split()[4]
        server = psutil.Process(proc.pid)
        body = hostile.multipart(hostile.webp_lossless(4096), filename="a.webp")
        request = hostile.post_head("/detect", len(body)) + body
        normal = hostile.photo_jpeg(64, 48)
        assert httpx.post(url + "/detect", files={"file": ("a.jpg", normal)}, timeout=10).status_code == 200
        cpu0 = sum(server.cpu_times()[:2])
        n = 40
        for _ in range(n):
            with connect(url) as sock:
                sock.sendall(request)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = httpx.get(url + "/metrics", timeout=10).text
            answered = sum(
                float(row.rsplit(" ", 1)[1])
                for row in text.splitlines()
                if row.startswith('bench_service_requests_total{endpoint="/detect"') and 'status="200"' not in row
            )
            if answered >= n:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # any decode still running finishes
        cpu = sum(server.cpu_times()[:2]) - cpu0
        r = httpx.post(url + "/detect", files={"file": ("a.jpg", normal)}, timeout=10)
        assert r.status_code == 200
        assert 'endpoint="/detect",status="499"' in text
        assert cpu / n <= 0.050, f"{cpu:.2f} s of server CPU for {n} disconnected requests (load {os.getloadavg()})"
    finally:
        stop(proc)


# --- 2. stalled bodies ----------------------------------------------------------------------------------


def test_stalled_bodies_hold_no_slot_and_get_408(svc: Any, images: Any) -> None:
    """More stalled uploads than --limit-concurrency: liveness and a normal /detect answer while they hang,
    and each stalled one gets a JSON 408 and a closed connection after --body-timeout."""
    stalled = []
    for _ in range(10):  # limit_concurrency is 6
        sock = connect(svc.url)
        sock.sendall(hostile.post_head("/detect", 100_000) + hostile.multipart(b"x" * 100_000)[:200])
        stalled.append(sock)
    try:
        time.sleep(0.2)
        live, took = _timed(lambda: httpx.get(svc.url + "/health/live", timeout=5))
        assert live.status_code == 200 and took < 1
        r = httpx.post(svc.url + "/detect", files={"file": ("a.jpg", images.jpeg())}, timeout=5)
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        for sock in stalled:
            status, headers, body = _status_line(sock)
            assert status == 408 and json.loads(body)["error"] == "body_timeout"
            assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
            assert closed_by_server(sock, 5)
        assert time.monotonic() - t0 < 5
    finally:
        for sock in stalled:
            sock.close()


def test_a_trickled_body_is_cut_at_the_minimum_rate(svc: Any) -> None:
    """One byte every 0.3 s never pauses for --body-timeout, but falls under the minimum average rate."""
    sock = connect(svc.url)
    try:
        sock.sendall(hostile.post_head("/detect", 100_000) + hostile.multipart(b"")[:60])
        t0 = time.monotonic()
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - t0 < 10 and not answer:
            try:
                sock.sendall(b"x")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - t0 < 1.0 + 10 / MIN_BODY_RATE + 2
    finally:
        sock.close()


def test_bodies_in_flight_are_bounded_in_bytes(svc: Any) -> None:
    """Stalled uploads of 400 KB each against --max-pending-upload-mb 1: the third is refused (JSON 503), and the
    bytes held never pass the bound."""
    socks = []
    try:
        for _ in range(3):
            sock = connect(svc.url)
            sock.sendall(hostile.post_head("/detect", 1_000_000) + hostile.multipart(b"y" * 1_000_000)[:400_000])
            socks.append(sock)
            time.sleep(0.1)
        status, headers, body = _status_line(socks[2], 5)
        assert status == 503 and json.loads(body)["error"] == "overloaded", body
        assert "--max-pending-upload-mb" in json.loads(body)["detail"] and "retry-after" in headers
        assert svc.metric("bench_service_pending_upload_bytes") <= 1024 * 1024
        assert svc.metric("bench_service_refused_total", reason="pending_bodies") >= 1
    finally:
        for sock in socks:
            sock.close()


# --- 3. chunk floods -----------------------------------------------------------------------------------


def test_one_byte_chunks_are_cut_off_and_liveness_stays_quick(svc: Any) -> None:
    before = svc.metric("bench_service_connections_dropped_total", reason="chunk_flood")
    body = hostile.multipart(b"X" * 50_000)
    chunked = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    sock = connect(svc.url)
    try:
        sock.sendall(hostile.post_head("/detect", None))
        try:  # the server closes the connection long before the 50,000th chunk
            for at in range(0, len(chunked), 4096):
                sock.sendall(chunked[at : at + 4096])
                time.sleep(0.001)
        except OSError:
            pass
        assert closed_by_server(sock, 5)
    finally:
        sock.close()
    assert svc.metric("bench_service_connections_dropped_total", reason="chunk_flood") == before + 1
    live, took = _timed(lambda: httpx.get(svc.url + "/health/live", timeout=5))
    assert live.status_code == 200 and took < 1


def test_a_normal_chunked_upload_still_passes(svc: Any, images: Any) -> None:
    body = hostile.multipart(images.jpeg(), filename="a.jpg")
    pieces = [body[i : i + 2048] for i in range(0, len(body), 2048)]
    assert len(pieces) < FREE_BODY_PIECES or len(body) / len(pieces) >= 1024
    r = httpx.post(
        svc.url + "/detect",
        content=iter(pieces),
        headers={"content-type": "multipart/form-data; boundary=hostileboundary"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


# --- 4. slow decoders inside the pixel budget -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda: hostile.bmp_rle8(64, 64), 415, "run-length coded BMP"),
        (lambda: hostile.bmp_rle8(BUDGET), 415, "aspect ratio"),
        (lambda: hostile.png_line(BUDGET), 415, "aspect ratio"),
        (lambda: hostile.progressive_jpeg(1200), 413, "progressive JPEG"),
    ],
    ids=["bmp-rle8", "bmp-rle8-line", "png-line", "progressive-jpeg"],
)
def test_slow_decoders_are_refused_from_the_header(svc: Any, make: Any, status: int, words: str) -> None:
    r, took = _timed(lambda: httpx.post(svc.url + "/detect", files={"file": ("x", make())}, timeout=10))
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert took < 1


def test_a_small_progressive_jpeg_still_passes(svc: Any) -> None:
    r = httpx.post(svc.url + "/detect", files={"file": ("p.jpg", hostile.progressive_jpeg(600))}, timeout=10)
    assert r.status_code == 200, r.text


# --- 5. the 503 at the concurrency limit ---------------------------------------------------------------------


def test_the_503_at_the_limit_is_json_counted_and_says_when_to_retry(
    svc: Any, images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, json.dumps({"service_delay_ms": 800}))  # each inference takes 0.8 s
    refused = svc.metric("bench_service_refused_total", reason="concurrency_limit")
    counted = svc.metric("bench_service_requests_total", endpoint="/detect", status="503")
    jpeg = images.jpeg()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=svc.url, timeout=10) as client:
            return list(
                await asyncio.gather(*(client.post("/detect", files={"file": ("a.jpg", jpeg)}) for _ in range(9)))
            )

    answers = asyncio.run(burst())
    over = [r for r in answers if r.status_code == 503]
    assert sorted(r.status_code for r in answers) == [200] * 6 + [503] * 3
    for r in over:
        body = r.json()
        assert body["error"] == "overloaded" and body["request_id"] == r.headers["x-request-id"]
        assert r.headers["content-type"] == "application/json" and r.headers["x-content-type-options"] == "nosniff"
        assert int(r.headers["retry-after"]) >= 1
    assert svc.metric("bench_service_refused_total", reason="concurrency_limit") == refused + 3
    assert svc.metric("bench_service_requests_total", endpoint="/detect", status="503") == counted + 3


# --- 6. memory after bursts; 15. process gauges ------------------------------------------------------------


def test_metrics_has_process_memory_and_cpu(svc: Any) -> None:
    assert svc.metric("process_resident_memory_bytes") > 10e6
    assert svc.metric("process_cpu_seconds_total") > 0
    assert svc.metric("process_open_fds") > 0


@pytest.mark.slow
def test_idle_rss_returns_near_its_start_after_a_burst(tmp_path: Path) -> None:
    """200 concurrent 1 MB uploads, twice: once idle again, the server's RSS is within 15 % of where it started."""
    proc = serve(["--model-dir", str(make_bundle(tmp_path / "m"))])
    try:
        line, _ = wait_line(proc, "bench serve: ready on ")
        url = line.split()[4]
        server = psutil.Process(proc.pid)
        upload = hostile.photo_jpeg(64, 48) + b"\0" * (1024 * 1024)  # a real JPEG padded to 1 MB (trailing data)
        assert httpx.post(url + "/detect", files={"file": ("a.jpg", upload)}, timeout=10).status_code == 200
        time.sleep(1.5)
        start = server.memory_info().rss

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=200)) as c:
                rs = await asyncio.gather(*(c.post("/detect", files={"file": ("a.jpg", upload)}) for _ in range(200)))
            return [r.status_code for r in rs]

        peaks = []
        for _ in range(2):
            statuses = asyncio.run(burst())
            assert statuses.count(200) >= 150, statuses
            peaks.append(server.memory_info().rss)
        time.sleep(3)
        idle = server.memory_info().rss
        trims = httpx.get(url + "/metrics", timeout=10).text
        assert "bench_service_memory_trims_total" in trims
        assert idle <= 1.15 * start, f"idle RSS {idle / 2**20:.0f} MB, start {start / 2**20:.0f} MB, peaks {peaks}"
    finally:
        stop(proc)


@pytest.mark.slow
def test_the_ready_line_says_a_fallback_happened(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from test_torch import make_hf_vit

    model = make_hf_vit(tmp_path / "vit")
    onnx = model / "onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:300])  # the ONNX variant cannot load: a truncated file
    proc = serve(["--model-dir", str(model), "--variant", "fp32", "--fallback", "pytorch", "--max-batch", "1"])
    try:
        line, _ = wait_line(proc, "bench serve: ready on ", timeout=120)
    finally:
        stop(proc)
    assert "FALLBACK to pytorch (pytorch): fp32 could not load: " in line, line
