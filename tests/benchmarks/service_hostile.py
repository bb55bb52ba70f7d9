#!/usr/bin/env python3
"""Detect service under hostile uploads and connections: server RSS peak and CPU per upload, before and after.

Not part of the test run (pytest ignores tests/benchmarks/). "after" is this tree's ``bench serve``; "before"
is the committed code (``git archive HEAD`` exported to --before-tree, default /tmp/old_tree, run with its
own PYTHONPATH), on the same generated 224 px ViT-shaped bundle. Both servers run under a 512 open-file
limit, as in the issue. Hostile files are generated here (tests/service/hostile.py), never stored.

    python tests/benchmarks/service_hostile.py                   # before and after, soak of 10,000 requests
    python tests/benchmarks/service_hostile.py --only after --soak 2000 --json out.json
    python tests/benchmarks/service_hostile.py --sweep           # decode cost per format and size (--max-pixels)
    python tests/benchmarks/service_hostile.py --second          # only the second attack (issue #29), both sides
    python tests/benchmarks/service_hostile.py --second --only after --flood 100 --json out.json

Per hostile upload: the server's RSS peak over its RSS just before (sampled every 2 ms), its CPU seconds
(user + system) and the answer's status and time. Then: a normal /detect sent while a hostile batch is
being decoded, idle RSS after the hostile set vs at start (start = idle after warm-up with normal /detect and
32-file /detect/batch requests), /health/live while 500 partial-header and 100 silent sockets are held,
and RSS over a closed-loop soak of normal /detect requests.

The second attack (``--second``; issue #29), each case bounded and on loopback, with a normal /detect every
0.5 s and /health/live every 0.25 s throughout (max and p50 latency per case): floods of requests whose
client hangs up at once (RLE8 BMP 16,777,216 x 1, lossless WebP 4096²; server CPU per request until it is
quiet again), stalled bodies (230 heads + 100 bytes, held past --body-timeout; then uploads of 9.5 MB
stalled before their last byte: the server's temp files measured in its own TMPDIR), 4 clients sending 3 MB
as 1-byte chunks, slow decoders looped by 8 clients (BMP RLE, 1 x 16,777,216 PNG, a batch of 32 progressive
8000² JPEGs), the 503 at the concurrency limit (its headers), and idle RSS after all of it vs start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "service"))

import hostile  # noqa: E402

FD_LIMIT = 512
MB = 1024 * 1024


# --- the server ------------------------------------------------------------------------------------


class Server:
    """``bench serve`` (this tree's, or the code in ``tree``) in a subprocess under a 512 open-file limit."""

    def __init__(self, bundle: Path, tree: Path | None, work: Path, extra: list[str] = ()):
        self.tmp = work / f"tmp-{'before' if tree else 'after'}"  # the server's TMPDIR: spooled uploads land here
        self.tmp.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(self.tmp)}
        env.pop("BENCH_MODEL_DIR", None)
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        self.log_path = work / f"serve-{'before' if tree else 'after'}.log"
        self.log = self.log_path.open("w")
        cmd = [sys.executable, "-m", "bench", "serve", "--model-dir", str(bundle), "--port", "0", *extra]
        self.proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=_limit_files
        )
        self.ps = psutil.Process(self.proc.pid)
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench serve exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            for line in self.log_path.read_text().splitlines():
                if line.startswith("bench serve: ready on "):
                    return line.split()[4]
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {timeout} s: {self.log_path.read_text()[-2000:]}")

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / MB

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def tmp_bytes(self) -> int:
        """Bytes in the server's temp folder (files deleted but still open are counted via /proc)."""
        total = 0
        fds = Path(f"/proc/{self.ps.pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):  # psutil.open_files() skips unlinked (O_TMPFILE) files
                    if os.readlink(fd).startswith(str(self.tmp)):
                        total += fd.stat().st_size
        return total

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


class PeakSampler:
    """The server's RSS every 2 ms while a request runs (psutil from this process)."""

    def __init__(self, server: Server):
        self.server = server
        self.peak = server.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.server.rss_mb())
            except psutil.Error:
                return
            time.sleep(0.002)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(server: Server, send: Callable[[], httpx.Response]) -> dict[str, Any]:
    """Status, wall ms, server CPU seconds and RSS peak over the RSS just before, of one request."""
    rss0, cpu0 = server.rss_mb(), server.cpu_s()
    with PeakSampler(server) as sampler:
        t0 = time.perf_counter()
        try:
            response = send()
            status: Any = response.status_code
            error = None if status == 200 else _error_code(response)
        except httpx.HTTPError as exc:
            status, error = type(exc).__name__, None
        ms = (time.perf_counter() - t0) * 1000
        time.sleep(0.05)  # let the peak after the answer be seen too
    return {
        "status": status,
        "error": error,
        "ms": round(ms, 1),
        "cpu_s": round(server.cpu_s() - cpu0, 3),
        "rss_before_mb": round(rss0, 1),
        "peak_over_mb": round(sampler.peak - rss0, 1),
    }


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except ValueError:
        return f"not JSON: {response.text[:60]!r}"


# --- phases ----------------------------------------------------------------------------------------


def hostile_set() -> dict[str, tuple[str, list[tuple[str, bytes]]]]:
    """name → (endpoint, [(filename, bytes)]) for the issue's hostile uploads."""
    webp = hostile.webp_lossless(8000)
    allowed = hostile.webp_lossless(1448)  # 32 of these = 67 MP: just inside the default batch budget
    return {
        "webp_lossless_8000": ("/detect", [("a.webp", webp)]),
        "png16_8000": ("/detect", [("a.png", hostile.png16(8000))]),
        "tiff32f_8000": ("/detect", [("a.tif", hostile.tiff32(8000, "F"))]),
        "jpeg_header_8000": ("/detect", [("a.jpg", hostile.jpeg_header_patched(8000))]),
        "png_short_idat_4000": ("/detect", [("a.png", hostile.png_short_idat(4000))]),
        "batch_32x_webp_8000": ("/detect/batch", [(f"{i}.webp", webp) for i in range(32)]),
        "batch_32x_webp_1448": ("/detect/batch", [(f"{i}.webp", allowed) for i in range(32)]),
    }


def post(url: str, endpoint: str, files: list[tuple[str, bytes]], timeout: float = 300) -> httpx.Response:
    field = "file" if endpoint == "/detect" else "files"
    return httpx.post(url + endpoint, files=[(field, f) for f in files], timeout=timeout)


def normal_during(server: Server, endpoint: str, files: list[tuple[str, bytes]], normal: bytes) -> dict[str, Any]:
    """Normal /detect requests sent while a hostile request is being decoded, vs the same requests alone.

    Client-side ms (this process on the same 2 cores) and the server's own processing_time_ms.total.
    """
    with httpx.Client(timeout=600) as client:
        alone = [_timed_detect(client, server.url, normal) for _ in range(5)]
        hostile_done = threading.Event()

        def run_hostile() -> None:
            with contextlib.suppress(httpx.HTTPError):
                post(server.url, endpoint, files)
            hostile_done.set()

        thread = threading.Thread(target=run_hostile, daemon=True)
        thread.start()
        time.sleep(0.05)
        during, overlapped = [], 0
        while not hostile_done.is_set() and len(during) < 5:
            during.append(_timed_detect(client, server.url, normal))
            overlapped += not hostile_done.is_set()  # the hostile request was still running when it was answered
        thread.join(timeout=600)
    return {
        "alone_ms": round(sorted(c for c, _ in alone)[2], 1),
        "alone_server_ms": round(sorted(t for _, t in alone)[2], 1),
        "during_max_ms": round(max((c for c, _ in during), default=float("nan")), 1),
        "during_max_server_ms": round(max((t for _, t in during), default=float("nan")), 1),
        "during_samples": len(during),
        "samples_overlapping_hostile": overlapped,
    }


def _timed_detect(client: httpx.Client, url: str, data: bytes) -> tuple[float, float]:
    """(client ms, server processing_time_ms.total) of one normal /detect."""
    t0 = time.perf_counter()
    r = client.post(url + "/detect", files={"file": ("n.jpg", data)})
    assert r.status_code == 200, r.text
    return (time.perf_counter() - t0) * 1000, float(r.json().get("processing_time_ms", {}).get("total", "nan"))


def slowloris(server: Server, partial: int = 500, silent: int = 100, hold_s: float = 3.0) -> dict[str, Any]:
    """/health/live and /detect while ``partial`` half-sent request heads and ``silent`` idle sockets are held."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    socks: list[socket.socket] = []
    refused = 0
    log0 = server.log_bytes()
    for i in range(partial + silent):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, int(port)))
            if i < partial:
                s.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except OSError:
            refused += 1
        socks.append(s)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            r = httpx.get(server.url + "/health/live", timeout=5)
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
        except httpx.HTTPError as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
        time.sleep(0.1)
    try:
        detect = httpx.post(
            server.url + "/detect", files={"file": ("n.jpg", hostile.photo_jpeg(320, 240))}, timeout=5
        ).status_code
    except httpx.HTTPError as exc:
        detect = type(exc).__name__
    still_open = sum(1 for s in socks if _is_open(s))
    for s in socks:
        s.close()
    return {
        "sockets": partial + silent,
        "connect_failed": refused,
        "health_live_max_ms": round(max(latencies), 1) if latencies else None,
        "health_live_ok": len(latencies) - sum(v for k, v in failures.items() if k.isdigit()),
        "health_live_failures": failures,
        "detect_status": detect,
        "held_sockets_still_open": still_open,
        "stderr_bytes_during": server.log_bytes() - log0,
    }


def _is_open(s: socket.socket) -> bool:
    try:
        s.setblocking(False)
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def soak(server: Server, n: int, normal: bytes, concurrency: int = 8) -> dict[str, Any]:
    """Closed loop of ``n`` normal /detect; RSS after the first 10 % and at the end."""

    async def run() -> dict[str, Any]:
        sent = 0
        statuses: dict[str, int] = {}
        rss: list[float] = []
        async with httpx.AsyncClient(timeout=30) as client:

            async def worker() -> None:
                nonlocal sent
                while sent < n:
                    sent += 1
                    if sent == n // 10:
                        rss.append(server.rss_mb())
                    r = await client.post(server.url + "/detect", files={"file": ("n.jpg", normal)})
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            seconds = time.perf_counter() - t0
        rss.append(server.rss_mb())
        return {
            "requests": n,
            "statuses": statuses,
            "seconds": round(seconds, 1),
            "rss_at_10pct_mb": round(rss[0], 1),
            "rss_end_mb": round(rss[-1], 1),
            "growth_pct": round((rss[-1] / rss[0] - 1) * 100, 2),
        }

    return asyncio.run(run())


def run_side(label: str, bundle: Path, tree: Path | None, work: Path, soak_n: int) -> dict[str, Any]:
    print(f"\n== {label} ({'HEAD code from ' + str(tree) if tree else 'this tree'}) ==", flush=True)
    server = Server(bundle, tree, work)
    normal = hostile.photo_jpeg(640, 480)
    try:
        with httpx.Client(timeout=60) as client:  # warm up both endpoints with normal traffic: the baseline
            for _ in range(20):
                _timed_detect(client, server.url, normal)
            for _ in range(3):
                post(server.url, "/detect/batch", [(f"{i}.jpg", normal) for i in range(32)])
        time.sleep(0.5)
        out: dict[str, Any] = {"rss_start_mb": round(server.rss_mb(), 1), "uploads": {}}  # warm, idle
        for name, (endpoint, files) in hostile_set().items():
            result = measure(server, lambda e=endpoint, f=files: post(server.url, e, f))
            out["uploads"][name] = result
            print(f"  {name:24s} {json.dumps(result)}", flush=True)
        cases = hostile_set()
        for name in ("batch_32x_webp_8000", "batch_32x_webp_1448"):
            endpoint, files = cases[name]
            out[f"normal_detect_during_{name}"] = during = normal_during(server, endpoint, files, normal)
            print(f"  normal /detect during {name}: {json.dumps(during)}", flush=True)
        time.sleep(2)
        out["rss_idle_after_mb"] = round(server.rss_mb(), 1)
        out["rss_idle_over_start_pct"] = round((out["rss_idle_after_mb"] / out["rss_start_mb"] - 1) * 100, 1)
        print(f"  idle RSS: start {out['rss_start_mb']} MB, after the hostile set {out['rss_idle_after_mb']} MB")
        out["slowloris"] = slowloris(server)
        print(f"  slowloris: {json.dumps(out['slowloris'])}", flush=True)
        time.sleep(1)
        if soak_n:
            out["soak"] = soak(server, soak_n, normal)
            print(f"  soak: {json.dumps(out['soak'])}", flush=True)
        out["stderr_tail"] = server.log_path.read_text()[-600:]
    finally:
        server.stop()
    return out


# --- the second attack (issue #29) -----------------------------------------------------------------------


def _probe_loop(url: str, normal: bytes, what: str, every: float, phase: Any, rows: Any, stop: Any) -> None:
    """One probe (``live`` or ``detect``) until ``stop``; runs in its own process, so the attacking threads of
    the script do not hold the GIL over its clock."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            now = phase.value
            t0 = time.perf_counter()
            try:
                if what == "live":
                    status: Any = client.get(url + "/health/live").status_code
                else:
                    r = client.post(url + "/detect", files={"file": ("n.jpg", normal)})
                    status = r.status_code
                    if status == 200:  # the server's own time as well as the client's
                        rows.append((now, "detect_server", r.json()["processing_time_ms"]["total"], 200))
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            rows.append((now, what, (time.perf_counter() - t0) * 1000, status))
            stop.wait(every)


class Probes:
    """A normal /detect every 0.5 s and /health/live every 0.25 s, each in a process of its own (a client clock
    that the script's attacking threads cannot stall), latencies kept per phase."""

    def __init__(self, url: str, normal: bytes):
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._phase = self._manager.Value(str, "idle")
        self._rows = self._manager.list()  # (phase, what, ms, status)
        self._stop = ctx.Event()
        self._procs = [
            ctx.Process(
                target=_probe_loop,
                args=(url, normal, what, every, self._phase, self._rows, self._stop),
                daemon=True,
            )
            for what, every in (("live", 0.25), ("detect", 0.5))
        ]

    @property
    def phase(self) -> str:
        return str(self._phase.value)

    @phase.setter
    def phase(self, name: str) -> None:
        self._phase.value = name

    @property
    def rows(self) -> list[tuple[str, str, float, Any]]:
        return list(self._rows)

    def __enter__(self) -> Probes:
        for proc in self._procs:
            proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(timeout=70)
        self._manager.shutdown()

    def summary(self, phase: str) -> dict[str, Any]:
        """The phase's latencies so far (while the probes run: the rows live in their manager)."""
        out: dict[str, Any] = {}
        every = self.rows
        for what in ("detect", "detect_server", "live"):
            rows = [(ms, st) for p, w, ms, st in every if p == phase and w == what]
            ms = sorted(m for m, _ in rows)
            out[what] = {
                "n": len(rows),
                "p50_ms": round(ms[len(ms) // 2], 1) if ms else None,
                "max_ms": round(ms[-1], 1) if ms else None,
                "statuses": {str(k): sum(1 for _, st in rows if st == k) for k in {st for _, st in rows}},
            }
        return out


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


# Server CPU per second (the probes' own requests included) under which it counts as quiet again.
QUIET_CPU = 0.3


def _wait_quiet(server: Server, bound_s: float) -> float:
    """Wait until the server's CPU use stays under QUIET_CPU for 1 s (or ``bound_s``); seconds waited."""
    t0 = time.monotonic()
    last = server.cpu_s()
    while time.monotonic() - t0 < bound_s:
        time.sleep(1.0)
        now = server.cpu_s()
        if now - last < QUIET_CPU:
            break
        last = now
    return time.monotonic() - t0


def _cpu_rate(server: Server, seconds: float = 2.0) -> float:
    """The server's CPU seconds per second now (the probes' baseline)."""
    cpu0 = server.cpu_s()
    time.sleep(seconds)
    return (server.cpu_s() - cpu0) / seconds


def disconnected_flood(server: Server, data: bytes, name: str, n: int, bound_s: float) -> dict[str, Any]:
    """``n`` uploads of ``data``, each on a socket closed as soon as it is sent; server CPU per request."""
    body = hostile.multipart(data, filename=name)
    request = hostile.post_head("/detect", len(body)) + body
    baseline = _cpu_rate(server)
    cpu0, t0 = server.cpu_s(), time.monotonic()
    refused = 0
    for _ in range(n):
        try:
            with _raw(server.url) as sock:
                sock.sendall(request)
        except OSError:
            refused += 1
    waited = _wait_quiet(server, bound_s)
    cpu = server.cpu_s() - cpu0
    net = cpu - baseline * (time.monotonic() - t0)
    return {
        "requests": n,
        "connect_failed": refused,
        "server_cpu_s": round(cpu, 2),
        "probe_baseline_cpu_per_s": round(baseline, 3),
        "cpu_ms_per_request": round(cpu / n * 1000, 1),
        "net_cpu_ms_per_request": round(net / n * 1000, 1),
        "seconds_until_quiet": round(time.monotonic() - t0, 1),
        "hit_bound": waited >= bound_s,
        "peak_rss_mb": round(server.rss_mb(), 1),
    }


def stalled_heads(server: Server, n: int, hold_s: float) -> dict[str, Any]:
    """``n`` POST heads (Content-Length 100,000) with 100 body bytes, held ``hold_s``; how each ended."""
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            sock = _raw(server.url)
            sock.sendall(hostile.post_head("/detect", 100_000) + hostile.multipart(b"x" * 100_000)[:100])
            socks.append(sock)
    time.sleep(hold_s)
    answers: dict[str, int] = {}
    for sock in socks:
        sock.setblocking(False)
        try:
            head = sock.recv(64)
            key = head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else ("closed" if not head else "other")
        except BlockingIOError:
            key = "still_open"
        except OSError:
            key = "reset"
        answers[key] = answers.get(key, 0) + 1
        sock.close()
    return {"sockets": len(socks), "held_s": hold_s, "ended": answers}


def stalled_uploads(server: Server, n: int, size: int, hold_s: float) -> dict[str, Any]:
    """``n`` uploads of ``size`` bytes stalled before their last byte: temp space and RSS the server holds."""
    socks, peak_tmp, t0 = [], 0, time.monotonic()
    payload = hostile.multipart(b"z" * size)
    rss0 = server.rss_mb()
    for _ in range(n):
        with contextlib.suppress(OSError):
            sock = _raw(server.url)
            sock.sendall(hostile.post_head("/detect", len(payload)) + payload[:-1])
            socks.append(sock)
        peak_tmp = max(peak_tmp, server.tmp_bytes())
    while time.monotonic() - t0 < hold_s:
        peak_tmp = max(peak_tmp, server.tmp_bytes())
        time.sleep(0.25)
    for sock in socks:
        sock.close()
    return {
        "uploads": n,
        "bytes_each": len(payload) - 1,
        "sent_in_all_mb": round(len(socks) * (len(payload) - 1) / MB, 1),
        "peak_temp_mb": round(peak_tmp / MB, 1),
        "rss_over_start_mb": round(server.rss_mb() - rss0, 1),
    }


def chunk_flood(server: Server, clients: int, size: int, bound_s: float) -> dict[str, Any]:
    """``clients`` uploads of ``size`` bytes sent as 1-byte chunks (each stops when closed or at ``bound_s``)."""
    cpu0 = server.cpu_s()
    body = hostile.multipart(b"X" * size)
    stream = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
    outcomes: list[str] = []

    def one() -> None:
        t0 = time.monotonic()
        try:
            with _raw(server.url) as sock:
                sock.sendall(hostile.post_head("/detect", None))
                for at in range(0, len(stream), 65536):
                    if time.monotonic() - t0 > bound_s:
                        outcomes.append("bound")
                        return
                    sock.sendall(stream[at : at + 65536])
                sock.settimeout(bound_s)
                outcomes.append(sock.recv(64).split(b"\r\n")[0].decode(errors="replace") or "closed")
        except OSError as exc:
            outcomes.append(f"closed by server ({type(exc).__name__})")

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=bound_s + 10)
    return {
        "clients": clients,
        "bytes_each": size,
        "outcomes": outcomes,
        "server_cpu_s": round(server.cpu_s() - cpu0, 2),
    }


def looped(
    server: Server, clients: int, seconds: float, endpoint: str, files: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """``clients`` threads posting the same upload for ``seconds``; statuses and server CPU."""
    cpu0, stop = server.cpu_s(), time.monotonic() + seconds
    statuses: dict[str, int] = {}

    def one() -> None:
        while time.monotonic() < stop:
            try:
                key = str(post(server.url, endpoint, files, timeout=60).status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 70)
    return {
        "clients": clients,
        "seconds": seconds,
        "statuses": statuses,
        "server_cpu_s": round(server.cpu_s() - cpu0, 2),
    }


def overload_503(server: Server, n: int, normal: bytes) -> dict[str, Any]:
    """``n`` concurrent normal uploads: the statuses, and the headers of a 503 if any came."""

    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=n)) as client:
            rs = await asyncio.gather(
                *(client.post(server.url + "/detect", files={"file": ("n.jpg", normal)}) for _ in range(n)),
                return_exceptions=True,
            )
        statuses: dict[str, int] = {}
        shape = None
        for r in rs:
            key = type(r).__name__ if isinstance(r, BaseException) else str(r.status_code)
            statuses[key] = statuses.get(key, 0) + 1
            if shape is None and isinstance(r, httpx.Response) and r.status_code == 503:
                shape = {
                    k: r.headers.get(k)
                    for k in ("content-type", "retry-after", "x-request-id", "x-content-type-options")
                }
        return {"requests": n, "statuses": statuses, "first_503_headers": shape}

    out = asyncio.run(run())
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    out["metrics_503_rows"] = [r for r in metrics.splitlines() if 'status="503"' in r or "refused_total" in r]
    return out


def run_second(label: str, bundle: Path, tree: Path | None, work: Path, flood: int, uploads: int) -> dict[str, Any]:
    print(f"\n== second attack, {label} ({'HEAD code from ' + str(tree) if tree else 'this tree'}) ==", flush=True)
    server = Server(bundle, tree, work)
    normal = hostile.photo_jpeg(640, 480)
    out: dict[str, Any] = {}
    try:
        with httpx.Client(timeout=60) as client:
            for _ in range(20):
                _timed_detect(client, server.url, normal)
        time.sleep(1.5)
        out["rss_start_mb"] = round(server.rss_mb(), 1)
        bmp, webp = hostile.bmp_rle8(16_777_216), hostile.webp_lossless(4096)
        png = hostile.png_line(16_777_216)  # every payload is built before the probes start: not on their clock
        progressive = [(f"{i}.jpg", hostile.progressive_jpeg(8000)) for i in range(32)]
        with Probes(server.url, normal) as probes:
            time.sleep(2)
            cases: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("flood_bmp_rle8_disconnected", lambda: disconnected_flood(server, bmp, "a.bmp", flood, 120)),
                ("flood_webp_4096_disconnected", lambda: disconnected_flood(server, webp, "a.webp", flood, 120)),
                ("stalled_heads_230", lambda: stalled_heads(server, 230, 15)),
                ("stalled_uploads_9_5mb", lambda: stalled_uploads(server, uploads, int(9.5 * MB), 5)),
                ("chunk_flood_4x3mb", lambda: chunk_flood(server, 4, 3 * MB, 60)),
                ("bmp_rle8_looped_8_clients", lambda: looped(server, 8, 10, "/detect", [("a.bmp", bmp)])),
                (
                    "png_1x16m_looped_8_clients",
                    lambda: looped(server, 8, 10, "/detect", [("a.png", png)]),
                ),
                (
                    "batch_32_progressive_8000",
                    lambda: looped(server, 1, 1, "/detect/batch", progressive),
                ),
                ("overload_300_concurrent", lambda: overload_503(server, 300, normal)),
            ]
            for name, case in cases:
                probes.phase = name
                result = case()
                _wait_quiet(server, 60)
                result["probes"] = probes.summary(name)
                out[name] = result
                print(f"  {name}: {json.dumps(result)}", flush=True)
            probes.phase = "after"
        time.sleep(3)
        out["rss_idle_after_mb"] = round(server.rss_mb(), 1)
        out["rss_idle_over_start_pct"] = round((out["rss_idle_after_mb"] / out["rss_start_mb"] - 1) * 100, 1)
        print(f"  idle RSS: start {out['rss_start_mb']} MB, after the second attack {out['rss_idle_after_mb']} MB")
        out["stderr_tail"] = server.log_path.read_text()[-600:]
    finally:
        server.stop()
    return out


# --- decode sweep (--max-pixels) -------------------------------------------------------------------

SWEEP_SIDES = (2048, 2896, 4096, 4900, 5657)
SWEEP_KINDS = ("webp", "png16", "tiff32f")


def sweep() -> list[dict[str, Any]]:
    """Decode cost of the costliest formats at growing sizes, each in a fresh process (bench.preprocess)."""
    rows = []
    for side in SWEEP_SIDES:
        for kind in SWEEP_KINDS:
            out = subprocess.run(
                [sys.executable, __file__, "--_decode", kind, str(side)], capture_output=True, text=True, check=True
            )
            rows.append(json.loads(out.stdout))
            print(f"  {json.dumps(rows[-1])}", flush=True)
    return rows


def decode_once(kind: str, side: int) -> None:
    from bench.preprocess import PreprocessConfig, decode_image, to_tensor

    data = {"webp": hostile.webp_lossless, "png16": hostile.png16, "tiff32f": hostile.tiff32}[kind](side)
    me = psutil.Process()
    rss0 = me.memory_info().rss
    peak = rss0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    cpu0 = time.process_time()
    to_tensor(decode_image(data, fit=(224, 224)), PreprocessConfig())
    cpu = time.process_time() - cpu0
    done.set()
    thread.join()
    print(
        json.dumps(
            {
                "kind": kind,
                "side": side,
                "megapixels": round(side * side / 1e6, 1),
                "file_bytes": len(data),
                "cpu_s": round(cpu, 3),
                "peak_over_mb": round((peak - rss0) / MB, 1),
            }
        )
    )


# --- main ----------------------------------------------------------------------------------------------


def export_head(tree: Path) -> None:
    if (tree / "bench" / "__init__.py").is_file():
        return
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["before", "after"], default=None)
    parser.add_argument("--before-tree", type=Path, default=Path("/tmp/old_tree"))
    parser.add_argument("--soak", type=int, default=10_000, help="normal /detect requests in the soak (0: none)")
    parser.add_argument("--sweep", action="store_true", help="only the decode cost sweep behind --max-pixels")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--second", action="store_true", help="only the second attack (issue #29)")
    parser.add_argument("--flood", type=int, default=300, help="--second: disconnected requests per flood")
    parser.add_argument("--uploads", type=int, default=100, help="--second: stalled 9.5 MB uploads")
    parser.add_argument("--_decode", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._decode:
        decode_once(args._decode[0], int(args._decode[1]))
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}; server open-file limit {FD_LIMIT}")
    results: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg": os.getloadavg()}
    if args.sweep:
        results["sweep"] = sweep()
    else:
        from models import make_bundle

        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            bundle = make_bundle(work / "vit224", size=224, hidden=64)
            if args.only in (None, "before"):
                export_head(args.before_tree)
                if args.second:
                    results["before"] = run_second("before", bundle, args.before_tree, work, args.flood, args.uploads)
                else:
                    results["before"] = run_side("before", bundle, args.before_tree, work, 0)
            if args.only in (None, "after"):
                if args.second:
                    results["after"] = run_second("after", bundle, None, work, args.flood, args.uploads)
                else:
                    results["after"] = run_side("after", bundle, None, work, args.soak)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
