"""``bench load --generators N``: one run's load from N independent generators, merged into one LoadResult.

One generator process tops out at a few thousand requests/s (its event loop, its HTTP parser); a batched
GPU service may need more. The run's schedule is made once, as for one generator, and split into N
arrival streams: constant arrivals round-robin (stream *i* is the total stream phase-shifted by
i/(N·rate), every N-th request), Poisson arrivals by a seeded random assignment of each request to a
stream (random thinning: N independent Poisson streams of rate/N that add up to the very same Poisson
stream). Closed loop splits the requests in flight. Each stream runs in its own process (``local``,
multiprocessing's spawn) or Ray actor (``ray``, spread over the nodes); each first measures its own
ceiling on /health/live while the others wait their turn, then all start at one common wall-clock
instant (clocks of different nodes must be NTP-synchronised). The raw latency samples of every stream
are pooled before any percentile is taken; each stream's send lag and ceiling are reported, and a run
in which one stream ran above 70 % of its own ceiling is marked invalid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from bench import cluster
from bench.errors import InputError
from bench.load.engine import StreamJob, StreamPart, merge_parts, run_stream
from bench.load.payloads import build_payloads
from bench.load.schedule import arrival_offsets
from bench.load.spec import ENDPOINTS, LoadSpec, check_target
from bench.results import LoadResult

GENERATOR_EXECUTORS = ("local", "ray")
MAX_GENERATORS = 64
READY_TIMEOUT_S = 120.0  # spawned processes or actors importing bench and aiohttp (a cold Ray node: longer)
CEILING_SLOT_GAP_S = 0.5  # between one stream's ceiling burst and the next one's
START_MARGIN_S = 0.5  # from handing out the start time to the common start

LogFn = Callable[[str], None]


def split_offsets(offsets: np.ndarray, arrival: str, count: int, seed: int) -> list[np.ndarray]:
    """The run's schedule as ``count`` streams: round-robin for constant arrivals (phase-shifted copies of a
    constant stream), a seeded random assignment for Poisson ones (thinning: independent Poisson streams)."""
    if count == 1:
        return [offsets]
    if arrival == "constant":
        return [offsets[i::count] for i in range(count)]
    owner = np.random.default_rng([seed, count]).integers(0, count, size=offsets.size)
    return [offsets[owner == i] for i in range(count)]


def split_count(total: int, count: int) -> list[int]:
    """``total`` shared as evenly as integers allow: 10 over 3 → [4, 3, 3]."""
    per, extra = divmod(total, count)
    return [per + (i < extra) for i in range(count)]


def plan_streams(spec: LoadSpec, count: int) -> tuple[str, list[StreamJob]]:
    """(target base URL, one job per stream); input errors before any process starts or request goes out."""
    if not 1 <= count <= MAX_GENERATORS:
        raise InputError(f"--generators must be between 1 and {MAX_GENERATORS}, got {count}")
    base = check_target(spec.url, spec.allow_remote)  # --allow-remote rules: exactly those of one generator
    payloads = build_payloads(spec.endpoint, spec.images, spec.files_per_request, seed=spec.seed)
    if spec.mode == "open":
        assert spec.rate is not None
        offsets = arrival_offsets(spec.rate, spec.duration_s, spec.arrival, spec.seed, spec.cap)
        if offsets.size == 0:
            raise InputError(f"--rate {spec.rate:g} × --duration {spec.duration_s:g} schedules no request")
        if offsets.size < count:
            raise InputError(f"{offsets.size} scheduled requests cannot feed {count} generators; lower --generators")
        shares = split_offsets(offsets, spec.arrival, count, spec.seed)
        caps = [int(s.size) for s in shares]
        return base, [
            StreamJob(i, count, replace(spec, max_requests=max(1, caps[i])), base, payloads, shares[i], i == 0)
            for i in range(count)
        ]
    assert spec.concurrency is not None
    if spec.concurrency < count:
        raise InputError(f"--concurrency {spec.concurrency} cannot be shared by {count} generators (at least 1 each)")
    in_flight, caps = split_count(spec.concurrency, count), split_count(spec.cap, count)
    return base, [
        StreamJob(
            i,
            count,
            replace(spec, concurrency=in_flight[i], max_requests=max(1, caps[i])),
            base,
            payloads,
            None,
            i == 0,
        )
        for i in range(count)
    ]


def schedule_times(count: int, spec: LoadSpec, now: float | None = None) -> tuple[list[float | None], float]:
    """(each stream's ceiling time, the common start), as wall-clock seconds: the ceiling bursts one after
    another (a stream's ceiling is its own, not its share of the server), then every stream at once."""
    now = time.time() if now is None else now
    slot = spec.ceiling_s + CEILING_SLOT_GAP_S + 0.2
    first = now + START_MARGIN_S
    if not spec.measure_ceiling:
        return [None] * count, first
    return [first + i * slot for i in range(count)], first + count * slot


def run_generators(
    spec: LoadSpec,
    generators: int,
    executor: str = "local",
    ray_address: str | None = None,
    log: LogFn | None = None,
) -> LoadResult:
    """``spec`` from ``generators`` streams in their own processes (local) or Ray actors; one merged result."""
    if executor not in GENERATOR_EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(GENERATOR_EXECUTORS)}, got {executor!r}")
    base, jobs = plan_streams(spec, generators)
    if log is not None:
        what = f"{spec.rate:g} req/s {spec.arrival}" if spec.mode == "open" else f"{spec.concurrency} in flight"
        log(
            f"load: {spec.mode} loop, {what}, {spec.duration_s:g} s (cap {spec.cap}) → {base}"
            f"{ENDPOINTS[spec.endpoint][1]} from {generators} generators ({executor})"
        )
    deadline_s = READY_TIMEOUT_S + generators * (spec.ceiling_s + 2) + spec.duration_s + 2 * spec.timeout_s + 30
    if executor == "ray":
        parts = _run_on_ray(jobs, spec, ray_address, deadline_s, log)
    else:
        parts = _run_in_processes(jobs, spec, deadline_s)
    result = merge_parts(spec, base, jobs[0].payloads, parts)
    if log is not None:
        for warning in result.warnings:
            log(f"warning: {warning}")
    return result


# --- local: one spawned process per stream --------------------------------------------------------------


def _stream_process(conn: Any, job: StreamJob) -> None:
    """A generator process: say ready, wait for the common times, run its stream, send the raw part back."""
    import asyncio

    try:
        conn.send(("ready", None))
        ceiling_at, start_at = conn.recv()
        conn.send(("done", asyncio.run(run_stream(job, start_at, ceiling_at))))
    except Exception as exc:  # reported to the driver as this stream's failure
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_in_processes(jobs: Sequence[StreamJob], spec: LoadSpec, deadline_s: float) -> list[StreamPart]:
    import multiprocessing  # here, not at the top: `bench --help` imports bench.load

    context = multiprocessing.get_context("spawn")  # no fork of the driver's threads and event loop state
    links, processes = [], []
    try:
        for job in jobs:
            parent, child = context.Pipe()
            process = context.Process(target=_stream_process, args=(child, job), name=f"bench-load-{job.index}")
            process.start()
            child.close()
            links.append(parent)
            processes.append(process)
        for index, link in enumerate(links):
            _expect(link, "ready", index, READY_TIMEOUT_S)
        ceiling_at, start_at = schedule_times(len(jobs), spec)
        for link, at in zip(links, ceiling_at, strict=True):
            link.send((at, start_at))
        give_up = time.monotonic() + deadline_s
        parts = [_expect(link, "done", i, max(1.0, give_up - time.monotonic())) for i, link in enumerate(links)]
        for process in processes:
            process.join(timeout=10)
        return parts
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def _expect(link: Any, what: str, index: int, timeout_s: float) -> Any:
    """The next message of generator ``index``; a RuntimeError (internal trouble) if it died or said otherwise."""
    if not link.poll(timeout_s):
        raise RuntimeError(f"load generator {index} sent nothing within {timeout_s:.0f} s (expected {what})")
    try:
        kind, payload = link.recv()
    except EOFError:
        raise RuntimeError(f"load generator {index} exited before it was {what}") from None
    if kind != what:
        raise RuntimeError(f"load generator {index} failed: {payload}")
    return payload


# --- ray: one actor per stream, spread over the nodes --------------------------------------------------------


class _StreamActor:
    """A Ray actor holding one stream (one CPU): ``ready`` then ``run`` at the common times."""

    def __init__(self, job: StreamJob) -> None:
        self.job = job

    def ready(self) -> str:
        return cluster.worker_label()

    def run(self, ceiling_at: float | None, start_at: float) -> StreamPart:
        import asyncio

        return asyncio.run(run_stream(self.job, start_at, ceiling_at, where=cluster.worker_label()))


def _run_on_ray(
    jobs: Sequence[StreamJob], spec: LoadSpec, address: str | None, deadline_s: float, log: LogFn | None
) -> list[StreamPart]:
    connection = cluster.connect(address, log=log)
    import ray

    actor_class: Any = ray.remote(num_cpus=1, max_restarts=0)(_StreamActor)
    actors: list[Any] = [actor_class.options(scheduling_strategy="SPREAD").remote(job) for job in jobs]
    try:
        ready = [a.ready.remote() for a in actors]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=READY_TIMEOUT_S)
        if len(done) < len(ready):
            raise InputError(
                f"only {len(done)} of {len(jobs)} load generators started on the Ray cluster within "
                f"{READY_TIMEOUT_S:g} s ({cluster.cluster_summary()}; each needs 1 CPU): lower --generators"
            )
        if log is not None:
            log("load generators on: " + ", ".join(ray.get(ready)))
        ceiling_at, start_at = schedule_times(len(jobs), spec)
        refs = [a.run.remote(at, start_at) for a, at in zip(actors, ceiling_at, strict=True)]
        finished, _ = ray.wait(refs, num_returns=len(refs), timeout=deadline_s)
        if len(finished) < len(refs):
            raise RuntimeError(f"{len(refs) - len(finished)} load generators did not finish within {deadline_s:.0f} s")
        return list(ray.get(refs))
    finally:
        for actor in actors:
            ray.kill(actor)
        connection.close()


__all__ = [
    "GENERATOR_EXECUTORS",
    "MAX_GENERATORS",
    "plan_streams",
    "run_generators",
    "schedule_times",
    "split_count",
    "split_offsets",
]
