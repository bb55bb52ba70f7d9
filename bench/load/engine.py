"""The request engine: sends a LoadSpec's requests with aiohttp and records what each one did.

Open loop sends request *i* at its scheduled time whatever the server is doing and times it from
then (no coordinated omission); closed loop keeps N requests in flight. Every run is bounded (duration,
request cap, per-request timeout, drain deadline) and errors are counted by status code or exception
name, never raised. aiohttp is imported only when a run starts, so ``bench --help`` stays fast.

A run is one or more *streams* (:class:`StreamJob`): each sends its share of the schedule from a common
start and hands back its raw figures (:class:`StreamPart`); :func:`merge_parts` makes the LoadResult from
the raw samples of every stream, so one generator and N generators are summarised by the same code.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import InputError
from bench.load.payloads import Payload, build_payloads
from bench.load.schedule import arrival_offsets
from bench.load.spec import ENDPOINTS, LoadSpec, check_target
from bench.load.verdicts import (
    CEILING_WARN_FRACTION,
    ceiling_warning,
    lag_summary,
    latency_summary,
    parse_health,
    server_verdict,
)
from bench.results import GeneratorFigures, LoadResult

if TYPE_CHECKING:
    import asyncio  # at run time imported by the functions that use it: ~16 ms off `bench --help`

CEILING_CONCURRENCY = 16  # in flight for the ceiling burst: within 2% of the best of 1..32 on 2 cores
# Most bytes read of one answer: a /detect/batch answer of 32 files is ~20 KB; an endless body is an error.
MAX_ANSWER_BYTES = 1024 * 1024
# What a 2xx answer of each endpoint must hold (JSON object keys) to count as ok.
ANSWER_KEYS = {"detect": ("label", "fake_probability"), "batch": ("results",), "health": ("status",)}


class AnswerTooLarge(Exception):
    """An answer body past MAX_ANSWER_BYTES (counted as ``too_large``)."""


async def read_capped(response: Any, cap: int = MAX_ANSWER_BYTES) -> bytes:
    """The body of ``response``, or AnswerTooLarge past ``cap`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge(f"answer body over {cap:,} bytes (stopped reading)")
        chunks.append(chunk)
    return b"".join(chunks)


def answer_problem(endpoint: str, body: bytes) -> str | None:
    """Why a 2xx body is not the service's answer for ``endpoint`` (None: it is)."""
    try:
        data = json.loads(body)
    except ValueError:
        return f"a 2xx answer that is not JSON: {body[:80]!r}"
    keys = ANSWER_KEYS.get(endpoint, ())
    if not isinstance(data, dict) or any(k not in data for k in keys):
        return f"a 2xx answer without {', '.join(keys)}: {body[:80]!r}"
    return None


class _Recorder:
    """What the requests of one run did; single-threaded (one event loop)."""

    def __init__(self, record_lag: bool) -> None:
        self.record_lag = record_lag
        self.latencies: list[tuple[int, float]] = []  # (request index, ms) of each 2xx answer
        self.sent_at: list[float] = []  # the send (open loop: scheduled) time of each, on the clock
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
    endpoint: str = ""


def _request(
    base: str, method: str, path: str, body: bytes = b"", content_type: str | None = None, endpoint: str = ""
) -> _Request:
    headers = (("user-agent", "bench-load"),) + ((("content-type", content_type),) if content_type else ())
    return _Request(method, base + path, body or None, headers, endpoint)


def error_key(exc: BaseException) -> str:
    """A stable name for a failed request: ``timeout``, ``connect`` (refused/unreachable), ``disconnected``
    (the server closed the connection mid-request), else the exception's class name."""
    import asyncio

    import aiohttp

    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return "disconnected"
    if isinstance(exc, AnswerTooLarge):
        return "too_large"
    return type(exc).__name__


async def _send(session: Any, request: _Request, index: int, when: float, rec: _Recorder) -> None:
    """One request, its answer read (up to MAX_ANSWER_BYTES) and checked; latency from ``when`` (its scheduled
    time in open loop). Never raises. Redirects are not followed: a 3xx is an error (the loopback guard checked
    --url only, and the images must not go anywhere else)."""
    clock = time.perf_counter
    rec.sent += 1
    rec.in_flight += 1
    rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
    if rec.record_lag:
        rec.lags.append((clock() - when) * 1e3)
    try:
        async with session.request(
            request.method, request.url, data=request.body, headers=request.headers, allow_redirects=False
        ) as response:
            body = await read_capped(response)
    except Exception as exc:  # refused, reset, timed out, protocol errors, ...: counted, never raised
        rec.error(error_key(exc), f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    else:
        done = clock()
        problem = answer_problem(request.endpoint, body) if 200 <= response.status < 300 else None
        if problem is not None:
            rec.error("bad_answer", problem)
        elif 200 <= response.status < 300:
            rec.latencies.append((index, (done - when) * 1e3))
            rec.sent_at.append(when)
        elif 300 <= response.status < 400:
            rec.error(str(response.status), f"redirect to {response.headers.get('location', '?')!r} (not followed)")
        else:
            rec.error(str(response.status), body.decode(errors="replace"))
    finally:
        rec.in_flight -= 1
        rec.last_done = clock()


async def _drain(tasks: set[asyncio.Task[Any]], deadline_s: float, rec: _Recorder) -> None:
    """Wait for in-flight requests up to ``deadline_s``; the rest are cancelled and counted as timeouts."""
    import asyncio

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


async def _open_loop(
    session: Any,
    requests: Sequence[_Request],
    offsets: np.ndarray,
    spec: LoadSpec,
    rec: _Recorder,
    on_mid: Callable[[], Any] | None,
    start: float | None = None,
) -> tuple[float, float, int]:
    """Send request i at start + offsets[i] (start: a perf_counter time, default now); returns (start, end of
    sending, number not sent)."""
    import asyncio

    clock = time.perf_counter
    tasks: set[asyncio.Task[Any]] = set()
    start = clock() + 0.02 if start is None else start
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


async def _closed_loop(
    session: Any,
    requests: Sequence[_Request],
    spec: LoadSpec,
    concurrency: int,
    rec: _Recorder,
    on_mid: Callable[[], Any] | None,
    start: float | None = None,
) -> tuple[float, float]:
    """``concurrency`` workers, each sending its next request when the previous one returned (from ``start``)."""
    import asyncio

    clock = time.perf_counter
    if start is not None and start > clock():
        await asyncio.sleep(start - clock())
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
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        trust_env=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def _health(session: Any, base: str, timeout_s: float = 5.0) -> dict[str, Any]:
    import aiohttp

    try:
        async with session.get(
            base + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as response:
            body = await read_capped(response)
    except Exception as exc:
        return {"rss_mb": None, "gpu_mb": None, "reason": f"/health failed: {error_key(exc)}"}
    try:  # 503 (not ready) still carries the process figures
        return parse_health(json.loads(body))
    except ValueError:
        return {"rss_mb": None, "gpu_mb": None, "reason": f"/health answered {response.status} without JSON"}


async def _ceiling(
    base: str, seconds: float, concurrency: int = CEILING_CONCURRENCY, cap: int = 50_000, timeout_s: float = 5.0
) -> tuple[float | None, str]:
    """The generator's own ceiling: a closed-loop burst against /health/live (the server's cheapest path).

    A lower bound (the server answers too). ``concurrency`` in flight: CEILING_CONCURRENCY.
    """
    spec = LoadSpec(
        url=base,
        endpoint="health",
        rate=None,
        concurrency=concurrency,
        duration_s=seconds,
        max_requests=cap,
        timeout_s=min(5.0, timeout_s),
        allow_remote=True,
        measure_ceiling=False,
    )
    rec = _Recorder(record_lag=False)
    request = _request(base, "GET", ENDPOINTS["health"][1], endpoint="health")
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


def generator_ceiling(base: str, seconds: float, timeout_s: float = 5.0) -> tuple[float | None, str]:
    """The generator's ceiling against ``base`` (req/s, or None with the reason), measured on its own event loop;
    each request waits ``timeout_s`` at most (the run's --timeout, up to 5 s)."""
    import asyncio

    return asyncio.run(_ceiling(base, seconds, timeout_s=timeout_s))


@dataclass
class StreamJob:
    """One arrival stream of a run: its share of the schedule (open loop) or of the requests in flight (closed).

    ``spec`` is the run's spec with this stream's ``concurrency`` and ``max_requests``; ``offsets`` its send
    times (open loop); ``health``: this stream also reads the server's /health (start, middle, end).
    """

    index: int
    count: int
    spec: LoadSpec
    base: str
    payloads: list[Payload]
    offsets: np.ndarray | None
    health: bool = True


@dataclass
class StreamPart:
    """What one stream did, raw (times in s from the common start): merged by :func:`merge_parts`."""

    index: int
    where: str
    samples: list[tuple[float, float]]  # (send time, latency ms) of each 2xx answer
    lags: list[float]
    errors: dict[str, int]
    examples: dict[str, str]
    sent: int
    max_in_flight: int
    send_end: float
    last_done: float
    unsent: int = 0
    scheduled: int | None = None
    last_offset: float | None = None
    ceiling: float | None = None
    ceiling_reason: str | None = None
    health: list[dict[str, Any]] = field(default_factory=list)  # [start, mid, end] when this stream read them
    concurrency: int | None = None


def _perf_at(epoch: float | None) -> float | None:
    """A wall-clock (epoch) instant on this process's perf_counter, so streams in other processes start together."""
    return None if epoch is None else time.perf_counter() + (epoch - time.time())


async def _sleep_until(epoch: float | None) -> None:
    import asyncio

    if epoch is not None and epoch > time.time():
        await asyncio.sleep(epoch - time.time())


async def run_stream(
    job: StreamJob, start_at: float | None = None, ceiling_at: float | None = None, where: str = ""
) -> StreamPart:
    """Run one stream: its ceiling burst at ``ceiling_at`` (epoch s, the others idle), then its share from
    ``start_at`` (epoch s; None: now)."""
    spec, base = job.spec, job.base
    method, path, _ = ENDPOINTS[spec.endpoint]
    ceiling, ceiling_why = None, None
    if spec.measure_ceiling:
        await _sleep_until(ceiling_at)
        ceiling, why = await _ceiling(base, spec.ceiling_s, timeout_s=spec.timeout_s)
        ceiling_why = why or None
    connections = spec.concurrency if spec.concurrency is not None else spec.connections
    rec = _Recorder(record_lag=spec.mode == "open")
    mid: dict[str, Any] = {}
    requests = [_request(base, method, path, p.body, p.content_type, spec.endpoint) for p in job.payloads]
    health_timeout = min(spec.timeout_s, 5.0)
    health: list[dict[str, Any]] = []
    unsent, last_offset = 0, None
    async with _session(connections, spec.timeout_s) as session:

        async def on_mid() -> None:
            mid.update(await _health(session, base, health_timeout))

        if job.health:
            health.append(await _health(session, base, health_timeout))
        if spec.mode == "open":
            assert job.offsets is not None
            start, send_end, unsent = await _open_loop(
                session, requests, job.offsets, spec, rec, on_mid if job.health else None, _perf_at(start_at)
            )
            last_offset = float(job.offsets[-1]) if job.offsets.size else None
            last_done = max(rec.last_done, send_end)
        else:
            assert spec.concurrency is not None
            start, send_end = await _closed_loop(
                session, requests, spec, spec.concurrency, rec, on_mid if job.health else None, _perf_at(start_at)
            )
            last_done = send_end
        if job.health:
            health.extend([mid, await _health(session, base, health_timeout)])
    return StreamPart(
        index=job.index,
        where=where or f"process {os.getpid()}",
        samples=sorted((when - start, ms) for when, (_, ms) in zip(rec.sent_at, rec.latencies, strict=True)),
        lags=rec.lags,
        errors=dict(rec.errors),
        examples=rec.examples,
        sent=rec.sent,
        max_in_flight=rec.max_in_flight,
        send_end=send_end - start,
        last_done=last_done - start,
        unsent=unsent,
        scheduled=int(job.offsets.size) if job.offsets is not None else None,
        last_offset=last_offset,
        ceiling=ceiling,
        ceiling_reason=ceiling_why,
        health=health,
        concurrency=spec.concurrency,
    )


def merge_parts(spec: LoadSpec, base: str, payloads: list[Payload], parts: Sequence[StreamPart]) -> LoadResult:
    """One LoadResult from every stream's raw samples (percentiles of the pooled samples, never averaged)."""
    parts = sorted(parts, key=lambda p: p.index)
    multi = len(parts) > 1
    open_loop = spec.mode == "open"
    samples_at = sorted(s for p in parts for s in p.samples)
    samples = [round(ms, 3) for _, ms in samples_at]
    lags = [lag for p in parts for lag in p.lags]
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for part in parts:
        errors.update(part.errors)
        for key, text in part.examples.items():
            examples.setdefault(key, text)
    sent = sum(p.sent for p in parts)
    unsent = sum(p.unsent for p in parts)
    send_end = max(p.send_end for p in parts)
    if open_loop:
        assert spec.rate is not None
        last = max((p.last_offset for p in parts if p.last_offset is not None), default=0.0)
        window = max(last + 1.0 / spec.rate, send_end)
        wall = max(max(p.last_done for p in parts), send_end)
    else:
        window = wall = send_end
    warnings: list[str] = []
    ceilings = [p.ceiling for p in parts]
    figures: list[GeneratorFigures] = []
    valid: bool | None = None
    if spec.measure_ceiling:
        if not multi:
            warning = parts[0].ceiling_reason if ceilings[0] is None else ceiling_warning(spec.rate, ceilings[0])
            if warning:
                warnings.append(warning)
        else:
            figures = [_generator_figures(p, spec, len(parts)) for p in parts]
            valid = True
            for f in figures:
                if f.get("over_ceiling"):
                    valid = False
                    warnings.append(
                        f"generator {f['index']} ({f['where']}): its {f['target_rate']:g}/s is "
                        f"{f['load_fraction']:.0%} of its own ceiling ({f['ceiling_rps']:g}/s), above "
                        f"{CEILING_WARN_FRACTION:.0%}: the run is invalid (a generator may have been the bottleneck); "
                        "use more --generators or a lower --rate"
                    )
                elif f.get("ceiling_rps") is None:
                    warnings.append(f"generator {f['index']}: {f.get('ceiling_reason')}")
    elif multi:
        figures = [_generator_figures(p, spec, len(parts)) for p in parts]
    if unsent:
        warnings.append(
            f"the generator fell more than --timeout behind schedule; {unsent} scheduled requests were not sent"
        )
    if open_loop and lags and np.percentile(lags, 99) > 10.0:
        warnings.append(
            f"send lag p99 {np.percentile(lags, 99):.1f} ms: the generator was late; "
            "latencies still count from the scheduled time"
        )
    ok = len(samples)
    wall = max(wall, 1e-9)
    health: list[dict[str, Any]] = next((p.health for p in parts if p.health), [{}, {}, {}])
    scheduled = [p.scheduled for p in parts if p.scheduled is not None]
    result = LoadResult(
        url=base,
        endpoint=spec.endpoint,
        mode=spec.mode,
        arrival=spec.arrival_kind if open_loop else None,
        target_rate=spec.rate,
        achieved_rate=round(sent / max(window, 1e-9), 3),
        duration_s=round(window, 3),
        requests=sent,
        ok=ok,
        errors=dict(sorted(errors.items())),
        latency_ms=latency_summary(samples),
        send_lag_ms=lag_summary(lags)
        if open_loop
        else {
            "p50": None,
            "p99": None,
            "max": None,
            "reason": "closed loop: each request is sent when the previous one returned; there is no schedule",
        },
        generator_ceiling_rps=ceilings[0] if not multi else _sum_or_none(ceilings),
        server=server_verdict(*health),
        concurrency=spec.concurrency,
        throughput_rps=round(ok / wall, 3),
        wall_s=round(wall, 3),
        max_in_flight=sum(p.max_in_flight for p in parts),
        files_per_request=payloads[0].files if spec.endpoint == "batch" else None,
        error_examples=dict(sorted(examples.items())),
        warnings=warnings,
        config={
            "duration_requested_s": spec.duration_s,
            "max_requests": spec.cap,
            "timeout_s": spec.timeout_s,
            "seed": spec.seed,
            "connections": spec.concurrency if spec.concurrency is not None else spec.connections,
            "payloads": len(payloads),
            "scheduled": sum(scheduled) if scheduled else None,
            "unsent": unsent,
            "latency_from": "scheduled send time" if open_loop else "actual send time",
            "latency_of": "2xx responses (errors are counted, not timed)",
        },
        samples_ms=samples,
        generators=figures,
        valid=valid,
    )
    return result


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    """The generators' ceilings together (each measured alone), or None when one could not be measured."""
    known = [v for v in values if v is not None]
    return round(sum(known), 1) if len(known) == len(values) else None


def _generator_figures(part: StreamPart, spec: LoadSpec, count: int) -> GeneratorFigures:
    """One stream's own figures: its share, requests, send lag, ceiling and how near it ran to that ceiling."""
    rate = spec.rate / count if spec.rate is not None else None
    fraction = round(rate / part.ceiling, 3) if rate is not None and part.ceiling else None
    return GeneratorFigures(
        index=part.index,
        where=part.where,
        target_rate=round(rate, 3) if rate is not None else None,
        concurrency=part.concurrency if spec.mode == "closed" else None,
        requests=part.sent,
        ok=len(part.samples),
        errors=sum(part.errors.values()),
        send_lag_ms=lag_summary(part.lags)
        if spec.mode == "open"
        else {"p50": None, "p99": None, "max": None, "reason": "closed loop: no schedule"},
        ceiling_rps=part.ceiling,
        ceiling_reason=part.ceiling_reason,
        load_fraction=fraction,
        over_ceiling=fraction is not None and fraction > CEILING_WARN_FRACTION,
    )


def run_load(spec: LoadSpec, log: Callable[[str], None] | None = None) -> LoadResult:
    """Run one bounded load test against ``spec.url``; errors are counted in the result, never raised."""
    import asyncio

    base = check_target(spec.url, spec.allow_remote)
    payloads = build_payloads(spec.endpoint, spec.images, spec.files_per_request, seed=spec.seed)
    if log is not None:
        what = f"{spec.rate:g} req/s {spec.arrival}" if spec.mode == "open" else f"{spec.concurrency} in flight"
        target = base + ENDPOINTS[spec.endpoint][1]
        log(f"load: {spec.mode} loop, {what}, {spec.duration_s:g} s (cap {spec.cap}) → {target}")
    offsets = None
    if spec.mode == "open":
        assert spec.rate is not None
        offsets = arrival_offsets(spec.rate, spec.duration_s, spec.arrival, spec.seed, spec.cap)
        if offsets.size == 0:
            raise InputError(f"--rate {spec.rate:g} × --duration {spec.duration_s:g} schedules no request")
    part = asyncio.run(run_stream(StreamJob(0, 1, spec, base, payloads, offsets)))
    result = merge_parts(spec, base, payloads, [part])
    if log is not None:
        for warning in result.warnings:
            log(f"warning: {warning}")
    return result
