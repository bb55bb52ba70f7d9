"""Load tests of the detect service: open-loop at a fixed arrival rate, closed-loop, find-max, service figures.

Open loop (the default) sends request *i* at its scheduled time ``start + offset[i]`` whatever the server
is doing, and measures its latency from that scheduled time, so a stalled server shows up in the tail
instead of silently slowing the generator down (no coordinated omission). How late the generator itself
was is recorded as ``send_lag_ms``. Closed loop (``concurrency=N``) keeps N requests in flight, each sent
when the previous one returned; it is labelled ``mode: "closed"`` and measures latency from the real send.

Every run is bounded: a duration, a request cap, a per-request timeout and a hard drain deadline; errors
are counted by status code or exception name, never raised. Targets are limited to loopback addresses
unless ``allow_remote`` is set. The engine is aiohttp (asyncio, C-accelerated HTTP parser:
0.10 ms of client CPU per /detect request against httpx's 0.40 ms, measured on the 2-core dev box), which
keeps closed-loop figures within 20% of wrk's (tests/benchmarks/load_crosscheck.py); exact latency
samples are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import math
import mimetypes
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.errors import BenchError, InputError
from bench.results import LoadResult

# endpoint name → (method, path, multipart field)
ENDPOINTS: dict[str, tuple[str, str, str | None]] = {
    "detect": ("POST", "/detect", "file"),
    "batch": ("POST", "/detect/batch", "files"),
    "health": ("GET", "/health/live", None),
}
ARRIVALS = ("constant", "poisson")
DEFAULT_MAX_REQUESTS = 100_000      # the request cap when none is given: every run is bounded
MAX_DURATION_S = 3600.0
MAX_PAYLOADS = 256                  # distinct pre-encoded bodies kept in memory (images are cycled)
CEILING_CONCURRENCY = 16           # in flight for the ceiling burst: within 2% of the best of 1..32 on 2 cores
CEILING_WARN_FRACTION = 0.7         # warn when the target rate is above this share of the generator's ceiling
LEAK_FLOOR_MB = 50.0                # leak rule: growth must exceed max(LEAK_FLOOR_MB, LEAK_FRACTION × start) ...
LEAK_FRACTION = 0.10
LEAK_LATE_SHARE = 1 / 3             # ... and the second half of the run must still add this share of that threshold
LEAK_RULE = (
    f"suspected when end − start > max({LEAK_FLOOR_MB:g} MB, {LEAK_FRACTION:.0%} of start) and the second half "
    f"of the run still grew by more than {LEAK_LATE_SHARE:.2g} of that threshold (growth that plateaus after "
    "warm-up is not a leak); RSS and GPU memory are judged alike; a short run only catches fast leaks"
)


class ServiceStartError(BenchError):
    """``bench serve`` did not become ready (exited, or not ready in time)."""

    exit_code = 4


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how fast and for how long.

    ``LoadSpec(url="http://127.0.0.1:8007", endpoint="detect", rate=100, duration_s=30, images=paths)``
    is an open-loop run; ``concurrency=8`` (with ``rate=None``) makes it closed-loop.
    """

    url: str
    endpoint: str = "detect"
    rate: float | None = 10.0            # open loop: requests per second
    arrival: str = "constant"            # constant | poisson (seeded)
    duration_s: float = 10.0
    concurrency: int | None = None       # closed loop: requests kept in flight
    max_requests: int | None = None      # cap (default DEFAULT_MAX_REQUESTS)
    images: tuple[Path, ...] = ()
    files_per_request: int = 4           # batch endpoint only
    timeout_s: float = 10.0              # per request (connect, read, write, pool wait)
    seed: int = 0
    connections: int = 256               # open loop: connection pool size
    allow_remote: bool = False
    measure_ceiling: bool = True
    ceiling_s: float = 1.0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise InputError(f"--endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}")
        if self.arrival not in ARRIVALS:
            raise InputError(f"--arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}")
        if self.concurrency is not None and self.rate is not None:
            raise InputError("give either --rate (open loop) or --concurrency (closed loop), not both")
        if self.concurrency is None and self.rate is None:
            raise InputError("give --rate (open loop) or --concurrency (closed loop)")
        if self.rate is not None and not (0 < self.rate <= 1e6):
            raise InputError(f"--rate must be > 0 requests/s, got {self.rate}")
        if self.concurrency is not None and not (1 <= self.concurrency <= 10_000):
            raise InputError(f"--concurrency must be between 1 and 10000, got {self.concurrency}")
        if not (0 < self.duration_s <= MAX_DURATION_S):
            raise InputError(f"--duration must be > 0 and ≤ {MAX_DURATION_S:g} s, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < 1:
            raise InputError(f"--max-requests must be ≥ 1, got {self.max_requests}")
        if not (0 < self.timeout_s <= 600):
            raise InputError(f"--timeout must be > 0 and ≤ 600 s, got {self.timeout_s}")
        if self.files_per_request < 1:
            raise InputError(f"--batch-files must be ≥ 1, got {self.files_per_request}")
        if self.connections < 1:
            raise InputError(f"--connections must be ≥ 1, got {self.connections}")

    @property
    def mode(self) -> str:
        return "closed" if self.concurrency is not None else "open"

    @property
    def cap(self) -> int:
        return self.max_requests if self.max_requests is not None else DEFAULT_MAX_REQUESTS


# --- targets and payloads -------------------------------------------------------------------------

def check_target(url: str, allow_remote: bool = False) -> str:
    """The base URL without a trailing slash; InputError unless http(s) on a loopback address (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--url must look like http://127.0.0.1:8007, got {url!r}")
    if not allow_remote and not is_loopback(parts.hostname):
        raise InputError(f"{parts.hostname} is not a loopback address; load tests only target this machine "
                         "unless --allow-remote is given")
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Literal loopback addresses and ``localhost``; names are never resolved (no DNS traffic)."""
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Payload:
    """One request body, multipart-encoded once up front and re-sent as is."""

    body: bytes
    content_type: str | None
    files: int


def encode_multipart(field_name: str, files: Sequence[tuple[str, bytes, str]], boundary: str) -> bytes:
    """multipart/form-data with one part per (filename, content, content type), all under ``field_name``."""
    out = bytearray()
    for filename, content, ctype in files:
        safe = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{field_name}"; filename="{safe}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode()
        out += content
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def build_payloads(endpoint: str, images: Sequence[Path], files_per_request: int = 4,
                   limit: int = MAX_PAYLOADS, seed: int = 0) -> list[Payload]:
    """Bodies for ``endpoint``: one image per body (detect), ``files_per_request`` (batch), none (health).

    At most ``limit`` bodies are kept; with more images, evenly spaced ones are used. Requests cycle
    through the bodies in order.
    """
    _, _, field_name = ENDPOINTS[endpoint]
    if field_name is None:
        return [Payload(b"", None, 0)]
    if not images:
        raise InputError("no images to send: --images names a folder without image files")
    paths = list(images)
    if len(paths) > limit:
        paths = [paths[int(i * len(paths) / limit)] for i in range(limit)]
    per = files_per_request if endpoint == "batch" else 1
    cache: dict[Path, bytes] = {}

    def read(p: Path) -> bytes:
        if p not in cache:
            try:
                cache[p] = p.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read image {p}: {exc.strerror or exc}") from exc
        return cache[p]

    boundary = f"bench-load-{seed:08x}-{os.getpid():x}"
    ctype = f"multipart/form-data; boundary={boundary}"
    payloads = []
    for k in range(len(paths)):
        chosen = [paths[(k * per + j) % len(paths)] for j in range(per)]
        parts = [(p.name, read(p), mimetypes.guess_type(p.name)[0] or "application/octet-stream") for p in chosen]
        payloads.append(Payload(encode_multipart(field_name, parts, boundary), ctype, per))
    return payloads


def arrival_offsets(rate: float, duration_s: float, arrival: str, seed: int = 0,
                    cap: int = DEFAULT_MAX_REQUESTS) -> np.ndarray:
    """Scheduled send times in seconds from the start: evenly spaced, or a seeded Poisson process."""
    if arrival == "constant":
        n = min(cap, math.floor(rate * duration_s + 1e-9))
        return np.arange(n, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    expected = rate * duration_s
    chunks: list[np.ndarray] = []
    t = 0.0
    for _ in range(64):  # bounded: each chunk covers ~expected + 10σ arrivals
        gaps = rng.exponential(1.0 / rate, size=int(expected + 10 * math.sqrt(expected) + 16))
        times = t + np.cumsum(gaps)
        chunks.append(times)
        t = float(times[-1])
        if t >= duration_s or sum(c.size for c in chunks) >= cap:
            break
    offsets = np.concatenate(chunks)
    return offsets[offsets < duration_s][:cap]


# --- statistics and verdicts ----------------------------------------------------------------------

def latency_summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    """{n, p50, p90, p99, p999, max, mean} from exact samples; nulls with a reason when there are none."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "p999": None, "max": None, "mean": None,
                "reason": "no successful (2xx) responses"}
    p50, p90, p99, p999 = np.percentile(x, [50, 90, 99, 99.9])
    return {"n": int(x.size), "p50": _r(p50), "p90": _r(p90), "p99": _r(p99), "p999": _r(p999),
            "max": _r(x.max()), "mean": _r(x.mean())}


def lag_summary(lags_ms: Sequence[float]) -> dict[str, Any]:
    x = np.asarray(lags_ms, dtype=np.float64)
    if x.size == 0:
        return {"p50": None, "p99": None, "max": None, "reason": "no request was sent"}
    p50, p99 = np.percentile(x, [50, 99])
    return {"p50": _r(p50), "p99": _r(p99), "max": _r(x.max())}


def _r(value: Any, digits: int = 3) -> float:
    return round(float(value), digits)


def leak_verdict(start: float | None, mid: float | None, end: float | None) -> bool | None:
    """LEAK_RULE for one memory series (MB); None when start or end is unknown."""
    if start is None or end is None:
        return None
    threshold = max(LEAK_FLOOR_MB, LEAK_FRACTION * start)
    if end - start <= threshold:
        return False
    if mid is None:
        return True
    return end - mid > LEAK_LATE_SHARE * threshold


def server_verdict(start: dict[str, Any], mid: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """The LoadResult ``server`` object from three /health readings (start, middle, end of the run)."""
    rss = [d.get("rss_mb") for d in (start, mid, end)]
    gpu = [d.get("gpu_mb") for d in (start, mid, end)]
    verdicts = [v for v in (leak_verdict(*rss), leak_verdict(*gpu)) if v is not None]
    reasons = sorted({d["reason"] for d in (start, end) if d.get("reason")})
    return {
        "rss_start_mb": rss[0], "rss_mid_mb": rss[1], "rss_end_mb": rss[2],
        "gpu_start_mb": gpu[0], "gpu_mid_mb": gpu[1], "gpu_end_mb": gpu[2],
        "leak_suspected": any(verdicts) if verdicts else None,
        "leak_rule": LEAK_RULE,
        "reason": "; ".join(reasons) or None,
    }


def parse_health(data: Any) -> dict[str, Any]:
    """RSS (``process.rss_mb``) and GPU memory (``memory_usage.gpu_memory_used_mb``) from a /health body."""
    if not isinstance(data, dict):
        return {"rss_mb": None, "gpu_mb": None, "reason": "/health did not answer a JSON object"}
    process = data.get("process") if isinstance(data.get("process"), dict) else {}
    memory = data.get("memory_usage") if isinstance(data.get("memory_usage"), dict) else {}
    rss, gpu = process.get("rss_mb"), memory.get("gpu_memory_used_mb")
    reasons = []
    if rss is None:
        reasons.append("/health has no process.rss_mb")
    if gpu is None:
        reasons.append("/health reports no GPU memory (no GPU, or none visible to the service)")
    return {"rss_mb": _num(rss), "gpu_mb": _num(gpu), "reason": "; ".join(reasons) or None}


def _num(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --- the engine -----------------------------------------------------------------------------------

class _Recorder:
    """What the requests of one run did; single-threaded (one event loop)."""

    def __init__(self, record_lag: bool) -> None:
        self.record_lag = record_lag
        self.latencies: list[tuple[int, float]] = []
        self.lags: list[float] = []
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_done = 0.0

    def error(self, key: str, detail: str) -> None:
        self.errors[key] += 1
        self.examples.setdefault(key, detail[:200])


@dataclass(frozen=True)
class _Request:
    """One request, built once and re-sent as is."""

    method: str
    url: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


def _request(base: str, method: str, path: str, body: bytes = b"", content_type: str | None = None) -> _Request:
    headers = (("user-agent", "bench-load"),) + ((("content-type", content_type),) if content_type else ())
    return _Request(method, base + path, body or None, headers)


def error_key(exc: BaseException) -> str:
    """A stable name for a failed request: ``timeout``, ``connect`` (refused/unreachable), ``disconnected``
    (the server closed the connection mid-request), else the exception's class name."""
    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return "disconnected"
    return type(exc).__name__


async def _send(session: Any, request: _Request, index: int, when: float, rec: _Recorder) -> None:
    """One request, body read in full; latency from ``when`` (its scheduled time in open loop). Never raises."""
    clock = time.perf_counter
    rec.sent += 1
    rec.in_flight += 1
    rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
    if rec.record_lag:
        rec.lags.append((clock() - when) * 1e3)
    try:
        async with session.request(request.method, request.url, data=request.body,
                                   headers=request.headers) as response:
            body = await response.read()
    except Exception as exc:  # refused, reset, timed out, protocol errors, ...: counted, never raised
        rec.error(error_key(exc), f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    else:
        done = clock()
        if 200 <= response.status < 300:
            rec.latencies.append((index, (done - when) * 1e3))
        else:
            rec.error(str(response.status), body.decode(errors="replace"))
    finally:
        rec.in_flight -= 1
        rec.last_done = clock()


async def _drain(tasks: set[asyncio.Task[Any]], deadline_s: float, rec: _Recorder) -> None:
    """Wait for in-flight requests up to ``deadline_s``; the rest are cancelled and counted as timeouts."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=max(0.0, deadline_s))
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        rec.errors["timeout"] += len(pending)
        rec.examples.setdefault("timeout", "still in flight at the drain deadline (cancelled)")
        rec.last_done = time.perf_counter()


async def _open_loop(session: Any, requests: Sequence[_Request], offsets: np.ndarray, spec: LoadSpec,
                     rec: _Recorder, on_mid: Callable[[], Any] | None) -> tuple[float, float, int]:
    """Send request i at start + offsets[i]; returns (start, end of sending, number not sent)."""
    clock = time.perf_counter
    tasks: set[asyncio.Task[Any]] = set()
    start = clock() + 0.02
    give_up = start + spec.duration_s + spec.timeout_s  # a generator this far behind stops scheduling
    mid_at = start + spec.duration_s / 2
    mid_task = None
    unsent = 0
    for i, offset in enumerate(offsets):
        when = start + float(offset)
        now = clock()
        if now > give_up:
            unsent = len(offsets) - i
            break
        if on_mid is not None and mid_task is None and now >= mid_at:
            mid_task = asyncio.create_task(on_mid())
        if when > now:
            await asyncio.sleep(when - now)
        else:
            await asyncio.sleep(0)  # behind schedule: send now, but let in-flight requests progress
        task = asyncio.create_task(_send(session, requests[i % len(requests)], i, when, rec))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    send_end = clock()
    if on_mid is not None and mid_task is None:
        mid_task = asyncio.create_task(on_mid())
    await _drain(tasks, spec.timeout_s + 1.0, rec)
    if mid_task is not None:
        await asyncio.wait({mid_task}, timeout=spec.timeout_s)
    return start, send_end, unsent


async def _closed_loop(session: Any, requests: Sequence[_Request], spec: LoadSpec, concurrency: int,
                       rec: _Recorder, on_mid: Callable[[], Any] | None) -> tuple[float, float]:
    """``concurrency`` workers, each sending its next request when the previous one returned."""
    clock = time.perf_counter
    start = clock()
    deadline = start + spec.duration_s
    counter = itertools.count()
    cap = spec.cap

    async def worker() -> None:
        while clock() < deadline:
            i = next(counter)
            if i >= cap:
                return
            await _send(session, requests[i % len(requests)], i, clock(), rec)

    workers = {asyncio.create_task(worker()) for _ in range(concurrency)}
    mid_task = None
    if on_mid is not None:
        done, _ = await asyncio.wait(workers, timeout=spec.duration_s / 2)
        if len(done) < len(workers):
            mid_task = asyncio.create_task(on_mid())
    await _drain({w for w in workers if not w.done()}, deadline - clock() + spec.timeout_s + 1.0, rec)
    end = clock()
    if mid_task is not None:
        await asyncio.wait({mid_task}, timeout=spec.timeout_s)
    return start, end


def _session(connections: int, timeout_s: float) -> Any:
    """An aiohttp session for one run: ``connections`` kept alive, ``timeout_s`` per request (pool wait
    included), no proxies or cookies from the environment, no automatic headers beyond Host."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 trust_env=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
                                 cookie_jar=aiohttp.DummyCookieJar())


async def _health(session: Any, base: str, timeout_s: float = 5.0) -> dict[str, Any]:
    import json

    import aiohttp

    try:
        async with session.get(base + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            body = await response.read()
    except Exception as exc:
        return {"rss_mb": None, "gpu_mb": None, "reason": f"/health failed: {error_key(exc)}"}
    try:  # 503 (not ready) still carries the process figures
        return parse_health(json.loads(body))
    except ValueError:
        return {"rss_mb": None, "gpu_mb": None, "reason": f"/health answered {response.status} without JSON"}


def ceiling_warning(rate: float | None, ceiling: float | None) -> str | None:
    """A warning when an open-loop target rate is above CEILING_WARN_FRACTION of the generator's ceiling."""
    if rate is None or not ceiling or rate <= CEILING_WARN_FRACTION * ceiling:
        return None
    return (f"target rate {rate:g}/s is {rate / ceiling:.0%} of the generator's own ceiling ({ceiling:g}/s): "
            "the generator may be the bottleneck; latencies then include its delay (see send_lag_ms)")


async def _ceiling(
    base: str, seconds: float, concurrency: int = CEILING_CONCURRENCY, cap: int = 50_000
) -> tuple[float | None, str]:
    """The generator's own ceiling: a closed-loop burst against /health/live (the server's cheapest path).

    A lower bound (the server answers too). ``concurrency`` in flight: CEILING_CONCURRENCY.
    """
    spec = LoadSpec(url=base, endpoint="health", rate=None, concurrency=concurrency, duration_s=seconds,
                    max_requests=cap, timeout_s=5.0, allow_remote=True, measure_ceiling=False)
    rec = _Recorder(record_lag=False)
    request = _request(base, "GET", ENDPOINTS["health"][1])
    async with _session(concurrency, spec.timeout_s) as session:
        await _send(session, request, 0, time.perf_counter(), rec)  # one probe: a dead target costs one request
        if rec.errors:
            return None, f"generator ceiling not measured: /health/live failed ({dict(rec.errors)})"
        rec = _Recorder(record_lag=False)
        start, end = await _closed_loop(session, [request], spec, concurrency, rec, None)
    ok = len(rec.latencies)
    if ok == 0 or sum(rec.errors.values()) > 0.01 * max(1, rec.sent):
        return None, f"ceiling burst against /health/live failed ({dict(rec.errors)})"
    return round(ok / max(1e-9, end - start), 1), ""


async def _run_async(spec: LoadSpec, base: str, payloads: list[Payload]) -> LoadResult:
    method, path, _ = ENDPOINTS[spec.endpoint]
    warnings: list[str] = []
    ceiling = None
    if spec.measure_ceiling:
        ceiling, why = await _ceiling(base, spec.ceiling_s)
        warning = why if ceiling is None else ceiling_warning(spec.rate, ceiling)
        if warning:
            warnings.append(warning)
    connections = spec.concurrency if spec.concurrency is not None else spec.connections
    rec = _Recorder(record_lag=spec.mode == "open")
    mid: dict[str, Any] = {}

    requests = [_request(base, method, path, p.body, p.content_type) for p in payloads]
    health_timeout = min(spec.timeout_s, 5.0)
    async with _session(connections, spec.timeout_s) as session:
        async def on_mid() -> None:
            mid.update(await _health(session, base, health_timeout))

        health_start = await _health(session, base, health_timeout)
        offsets = None
        unsent = 0
        if spec.mode == "open":
            assert spec.rate is not None
            offsets = arrival_offsets(spec.rate, spec.duration_s, spec.arrival, spec.seed, spec.cap)
            if offsets.size == 0:
                raise InputError(f"--rate {spec.rate:g} × --duration {spec.duration_s:g} schedules no request")
            start, send_end, unsent = await _open_loop(session, requests, offsets, spec, rec, on_mid)
            window = max(float(offsets[-1]) + 1.0 / spec.rate, send_end - start)
            wall = max(rec.last_done, send_end) - start
        else:
            assert spec.concurrency is not None
            start, end = await _closed_loop(session, requests, spec, spec.concurrency, rec, on_mid)
            window = wall = end - start
        health_end = await _health(session, base, health_timeout)

    if unsent:
        warnings.append(f"the generator fell more than --timeout behind schedule; {unsent} scheduled requests "
                        "were not sent")
    if spec.mode == "open" and rec.lags and np.percentile(rec.lags, 99) > 10.0:
        warnings.append(f"send lag p99 {np.percentile(rec.lags, 99):.1f} ms: the generator was late; "
                        "latencies still count from the scheduled time")
    rec.latencies.sort()
    samples = [round(ms, 3) for _, ms in rec.latencies]
    ok = len(samples)
    wall = max(wall, 1e-9)
    result = LoadResult(
        url=base, endpoint=spec.endpoint, mode=spec.mode,
        arrival=spec.arrival if spec.mode == "open" else None,
        target_rate=spec.rate,
        achieved_rate=round(rec.sent / max(window, 1e-9), 3),
        duration_s=round(window, 3),
        requests=rec.sent, ok=ok, errors=dict(sorted(rec.errors.items())),
        latency_ms=latency_summary(samples),
        send_lag_ms=lag_summary(rec.lags) if spec.mode == "open" else {
            "p50": None, "p99": None, "max": None,
            "reason": "closed loop: each request is sent when the previous one returned; there is no schedule"},
        generator_ceiling_rps=ceiling,
        server=server_verdict(health_start, mid, health_end),
        concurrency=spec.concurrency,
        throughput_rps=round(ok / wall, 3),
        wall_s=round(wall, 3),
        max_in_flight=rec.max_in_flight,
        files_per_request=payloads[0].files if spec.endpoint == "batch" else None,
        error_examples=dict(sorted(rec.examples.items())),
        warnings=warnings,
        config={"duration_requested_s": spec.duration_s, "max_requests": spec.cap, "timeout_s": spec.timeout_s,
                "seed": spec.seed, "connections": connections, "payloads": len(payloads),
                "scheduled": int(offsets.size) if offsets is not None else None, "unsent": unsent,
                "latency_from": "scheduled send time" if spec.mode == "open" else "actual send time",
                "latency_of": "2xx responses (errors are counted, not timed)"},
        samples_ms=samples,
    )
    return result


def run_load(spec: LoadSpec, log: Callable[[str], None] | None = None) -> LoadResult:
    """Run one bounded load test against ``spec.url``; errors are counted in the result, never raised."""
    base = check_target(spec.url, spec.allow_remote)
    payloads = build_payloads(spec.endpoint, spec.images, spec.files_per_request, seed=spec.seed)
    if log is not None:
        what = (f"{spec.rate:g} req/s {spec.arrival}" if spec.mode == "open" else f"{spec.concurrency} in flight")
        target = base + ENDPOINTS[spec.endpoint][1]
        log(f"load: {spec.mode} loop, {what}, {spec.duration_s:g} s (cap {spec.cap}) → {target}")
    result = asyncio.run(_run_async(spec, base, payloads))
    if log is not None:
        for warning in result.warnings:
            log(f"warning: {warning}")
    return result


# --- find the highest rate that meets the SLO ----------------------------------------------------

def judge_step(result: LoadResult, slo_p99_ms: float) -> tuple[bool, str]:
    """A step passes when every request succeeded, p99 ≤ SLO and the generator sent all it scheduled.

    A late generator needs no check of its own: latency counts from the scheduled time, so its lag
    is already in p99 (a step can only be judged too slow, never too fast).
    """
    errors = sum(result.errors.values())
    p99 = result.latency_ms.get("p99")
    if result.requests == 0 or p99 is None:
        return False, "no successful responses"
    if errors:
        return False, f"{errors} errors ({', '.join(f'{k}: {v}' for k, v in result.errors.items())})"
    if p99 > slo_p99_ms:
        return False, f"p99 {p99:.1f} ms > SLO {slo_p99_ms:g} ms"
    if result.config.get("unsent"):
        return False, f"the generator could not send {result.config['unsent']} scheduled requests"
    return True, f"p99 {p99:.1f} ms ≤ {slo_p99_ms:g} ms, no errors"


def find_max_rate(
    run_step: Callable[[float], LoadResult],
    slo_p99_ms: float,
    start_rate: float = 10.0,
    max_steps: int = 10,
    max_rate: float | None = None,
    tolerance: float = 0.1,
    min_rate: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], LoadResult | None]:
    """Double the rate while steps pass, then bisect between the last pass and the first failure.

    Bounded by ``max_steps`` steps, ``max_rate`` (e.g. the generator's ceiling) and a relative
    ``tolerance`` on the final bracket. Returns ({slo_p99_ms, rate_rps, limited_by, steps}, best step).
    """
    if slo_p99_ms <= 0:
        raise InputError(f"--p99-slo must be > 0 ms, got {slo_p99_ms}")
    if start_rate <= 0:
        raise InputError(f"the starting rate must be > 0, got {start_rate}")
    lo: float | None = None
    hi: float | None = None
    best: LoadResult | None = None
    first: LoadResult | None = None
    steps: list[dict[str, Any]] = []
    limited_by = "max_steps"
    rate = start_rate if max_rate is None else min(start_rate, max_rate)
    while len(steps) < max_steps:
        result = run_step(rate)
        first = first or result
        passed, why = judge_step(result, slo_p99_ms)
        steps.append({"rate": round(rate, 3), "achieved_rate": result.achieved_rate, "requests": result.requests,
                      "ok": result.ok, "errors": result.errors, "p50_ms": result.latency_ms.get("p50"),
                      "p99_ms": result.latency_ms.get("p99"), "passed": passed, "why": why})
        if log is not None:
            log(f"find-max: {rate:g}/s → {'pass' if passed else 'fail'}: {why}")
        if passed and (lo is None or rate > lo):
            lo, best = rate, result
        if not passed and (hi is None or rate < hi):
            hi = rate
        if hi is None:  # still doubling
            if max_rate is not None and rate >= max_rate:
                limited_by = "max_rate"
                break
            rate = rate * 2 if max_rate is None else min(rate * 2, max_rate)
        elif lo is None:  # failing from the start: halve
            rate = hi / 2
            if rate < min_rate:
                limited_by = "min_rate"
                break
        else:
            if (hi - lo) / lo <= tolerance:
                limited_by = "slo"
                break
            rate = (lo + hi) / 2
    summary = {"slo_p99_ms": slo_p99_ms, "rate_rps": None if lo is None else round(lo, 3),
               "limited_by": limited_by, "steps": steps}
    if lo is None:
        summary["reason"] = "no step met the SLO with no errors"
    return summary, best or first


def run_find_max(spec: LoadSpec, slo_p99_ms: float, step_duration_s: float = 5.0, max_steps: int = 10,
                 log: Callable[[str], None] | None = None, ceiling: float | None = None) -> LoadResult:
    """``bench load --find-max``: the generator's ceiling once, then rate steps (each a bounded open-loop run).

    Returns the best passing step's LoadResult (or the first step's when none passed) with ``max_rate`` set.
    A ``ceiling`` measured already (req/s) is used instead of measuring it again.
    """
    if spec.mode != "open":
        raise InputError("--find-max steps an open-loop rate; do not combine it with --concurrency")
    base = check_target(spec.url, spec.allow_remote)
    if ceiling is None and spec.measure_ceiling:
        ceiling, why = asyncio.run(_ceiling(base, spec.ceiling_s))
        if log is not None:
            log(f"find-max: generator ceiling {ceiling:g}/s" if ceiling else f"warning: {why}")
    step_spec = replace(spec, duration_s=step_duration_s, measure_ceiling=False)

    def step(rate: float) -> LoadResult:
        return run_load(replace(step_spec, rate=rate))

    cap = CEILING_WARN_FRACTION * ceiling if ceiling else None
    summary, best = find_max_rate(step, slo_p99_ms, start_rate=spec.rate or 10.0, max_steps=max_steps,
                                  max_rate=cap, log=log)
    if summary["limited_by"] == "max_rate":
        summary["limited_by"] = "generator"
        summary["reason"] = (f"stopped at {CEILING_WARN_FRACTION:.0%} of the generator's ceiling ({ceiling:g}/s); "
                             "the service may sustain more")
    assert best is not None
    best.max_rate = summary
    best.generator_ceiling_rps = ceiling
    return best


# --- service figures for `bench matrix --with-service` -------------------------------------------

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str, timeout_s: float = 2.0) -> tuple[int | None, Any]:
    """(status, parsed JSON body or None) of a GET, without proxies; (None, None) when nothing answered."""
    import json
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503 while loading still carries a JSON body
        status, body = exc.code, exc.read()
    except OSError:
        return None, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


@contextlib.contextmanager
def serve_subprocess(model_dir: str | Path | None, variant: str = "fp32", provider: str = "cpu", *,
                     port: int | None = None, extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                     ready_timeout_s: float = 120.0) -> Iterator[str]:
    """Start ``bench serve`` on a free loopback port, wait for /health/ready, yield its base URL, stop it.

    ``env`` entries are added to this process's environment (e.g. BENCH_FAULTS for a slow server).
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "bench", "serve", "--variant", variant, "--provider", provider,
           "--host", "127.0.0.1", "--port", str(port), *extra_args]
    if model_dir is not None:
        cmd[4:4] = ["--model-dir", str(model_dir)]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+b") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})

        def tail() -> str:
            log_file.seek(0)
            lines = log_file.read().decode(errors="replace").strip().splitlines()
            return " | ".join(lines[-5:]) or "(no output)"

        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise ServiceStartError(f"bench serve exited with {proc.returncode} before it was ready: {tail()}")
                if _get_json(base + "/health/ready")[0] == 200:
                    break
                health = _get_json(base + "/health")[1]
                if isinstance(health, dict) and health.get("model_state") == "failed":
                    raise ServiceStartError(f"bench serve could not load the model: {health.get('reason')}")
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"bench serve was not ready after {ready_timeout_s:g} s: {tail()}")
                time.sleep(0.1)
            yield base
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def inprocess_p50(model_dir: str | Path | None, variant: str, provider: str, iterations: int = 200) -> float | None:
    """bench's in-process latency p50 (ms) of one variant/provider at batch 1 (bench.runner.measure_cell)."""
    from bench.bundle import Bundle, resolve_model_dir
    from bench.runner import RunOptions, measure_cell
    from bench.timing import LoopSpec
    from bench.variants import ensure_variant

    bundle = Bundle.discover(resolve_model_dir(model_dir))
    path = ensure_variant(bundle, variant, allow_build=True)
    cell = measure_cell(path, variant, provider, RunOptions(batch_size=1, loop=LoopSpec(iterations, 10), sample_hz=0))
    return None if cell.status != "ok" or not cell.latency_ms else float(cell.latency_ms["p50"])


def service_figures(
    model_dir: str | Path | None,
    variant: str = "fp32",
    provider: str = "cpu",
    *,
    images: Sequence[Path] | str | Path | None = None,
    rate: float = 20.0,
    duration_s: float = 5.0,
    batch_files: int = 8,
    batch_rate: float = 4.0,
    slo_p99_ms: float = 50.0,
    find_max_start: float = 10.0,
    find_max_step_s: float = 3.0,
    find_max_steps: int = 10,
    find_max_timeout_s: float = 5.0,
    inprocess_p50_ms: float | None = None,
    serve_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One RunResult.service entry: start ``bench serve``, load /detect, /detect/batch, find the max rate, stop.

    Never raises for a service that cannot start or a provider that cannot run: the entry then has
    ``status`` "unavailable"/"failed" and a ``reason``, with the figures null.
    """
    from bench import datasets

    if images is None or isinstance(images, (str, Path)):
        paths = tuple(datasets.image_files(datasets.resolve_dataset(images)))
    else:
        paths = tuple(images)
    entry: dict[str, Any] = {"variant": variant, "provider": provider, "status": "ok", "reason": None,
                             "load": None, "inprocess_p50_ms": None, "overhead_p50_ms": None,
                             "batch_endpoint": None, "max_rate": None}
    say = log or (lambda _msg: None)
    if inprocess_p50_ms is None:
        say(f"service {variant}/{provider}: in-process p50 at batch 1")
        inprocess_p50_ms = inprocess_p50(model_dir, variant, provider)
        if inprocess_p50_ms is None:
            return {**entry, "status": "unavailable",
                    "reason": f"{variant} on {provider} cannot run in-process here, so the service was not started"}
    entry["inprocess_p50_ms"] = round(inprocess_p50_ms, 3)
    try:
        with serve_subprocess(model_dir, variant, provider, extra_args=serve_args, env=env,
                              ready_timeout_s=ready_timeout_s) as base:
            say(f"service {variant}/{provider}: ready at {base}; detect load {rate:g}/s for {duration_s:g} s")
            detect = run_load(LoadSpec(url=base, endpoint="detect", rate=rate, duration_s=duration_s, images=paths))
            say(f"service {variant}/{provider}: batch endpoint, {batch_files} files × {batch_rate:g}/s")
            batch = run_load(LoadSpec(url=base, endpoint="batch", rate=batch_rate, duration_s=duration_s,
                                      images=paths, files_per_request=batch_files, measure_ceiling=False))
            say(f"service {variant}/{provider}: find-max under p99 ≤ {slo_p99_ms:g} ms")
            best = run_find_max(LoadSpec(url=base, endpoint="detect", rate=find_max_start, duration_s=find_max_step_s,
                                         images=paths, timeout_s=find_max_timeout_s),
                                slo_p99_ms, step_duration_s=find_max_step_s, max_steps=find_max_steps, log=log,
                                ceiling=detect.generator_ceiling_rps)
    except ServiceStartError as exc:
        return {**entry, "status": "failed", "reason": str(exc)}
    p50 = detect.latency_ms.get("p50")
    bp50 = batch.latency_ms.get("p50")
    entry.update({
        "load": detect.to_dict(),
        "overhead_p50_ms": None if p50 is None else round(p50 - inprocess_p50_ms, 3),
        "batch_endpoint": {
            "files_per_request": batch_files, "rate": batch_rate, "requests": batch.requests, "ok": batch.ok,
            "errors": batch.errors, "latency_ms": batch.latency_ms,
            "ms_per_image_p50": None if bp50 is None else round(bp50 / batch_files, 3),
            "images_per_s": round(batch.throughput_rps * batch_files, 3) if batch.throughput_rps else None,
        },
        "max_rate": {k: v for k, v in (best.max_rate or {}).items()},
    })
    if detect.ok == 0:
        entry.update(status="failed", reason=f"no successful /detect responses ({detect.errors})")
    return entry


def summary_lines(result: LoadResult) -> list[str]:
    """A short human summary of a LoadResult (``bench load`` without --json)."""
    from bench.console import fmt

    lat, lag, srv = result.latency_ms, result.send_lag_ms, result.server
    how = (f"open loop, {result.arrival} arrivals, target {fmt(result.target_rate, 1)}/s"
           if result.mode == "open" else f"closed loop, {result.concurrency} in flight (mode: closed)")
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"
    lines = [
        f"bench load · {result.url}{ENDPOINTS[result.endpoint][1]} · {how}",
        f"requests {result.requests} in {fmt(result.duration_s)} s · achieved {fmt(result.achieved_rate, 1)}/s · "
        f"ok {result.ok} · throughput {fmt(result.throughput_rps, 1)}/s · errors {errors}",
        "latency ms" + (" (from scheduled send)" if result.mode == "open" else "") + ": "
        + " · ".join(f"{k} {fmt(lat.get(k), 1)}" for k in ("p50", "p90", "p99", "p999", "max", "mean")),
    ]
    if result.mode == "open":
        lines.append(f"send lag ms: p50 {fmt(lag.get('p50'))} · p99 {fmt(lag.get('p99'))} · max {fmt(lag.get('max'))}")
    lines.append(f"generator ceiling: {fmt(result.generator_ceiling_rps, 0)}/s (closed-loop burst on /health/live)")
    lines.append(f"server RSS MB {fmt(srv.get('rss_start_mb'), 1)} → {fmt(srv.get('rss_end_mb'), 1)} · GPU MB "
                 f"{fmt(srv.get('gpu_start_mb'), 1)} → {fmt(srv.get('gpu_end_mb'), 1)} · leak suspected: "
                 f"{fmt(srv.get('leak_suspected'))}")
    if result.max_rate is not None:
        mr = result.max_rate
        lines.append(f"find-max (p99 ≤ {mr['slo_p99_ms']:g} ms, no errors): "
                     f"{fmt(mr['rate_rps'], 1) + '/s' if mr['rate_rps'] is not None else 'none'} "
                     f"(stopped by {mr['limited_by']})" + (f" — {mr['reason']}" if mr.get("reason") else ""))
        for s in mr["steps"]:
            lines.append(f"  {s['rate']:>9.2f}/s  p50 {fmt(s['p50_ms'], 1):>7}  p99 {fmt(s['p99_ms'], 1):>7}  "
                         f"{'pass' if s['passed'] else 'FAIL'}  {s['why']}")
    return lines


__all__ = [
    "ENDPOINTS", "LEAK_RULE", "LoadResult", "LoadSpec", "Payload", "ServiceStartError", "arrival_offsets",
    "build_payloads", "ceiling_warning", "check_target", "encode_multipart", "find_max_rate", "free_port",
    "inprocess_p50", "is_loopback", "judge_step", "latency_summary", "leak_verdict", "parse_health",
    "run_find_max", "run_load", "serve_subprocess", "server_verdict", "service_figures", "summary_lines",
]
