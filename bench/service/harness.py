"""Start ``bench serve`` and measure it, for ``bench matrix --with-service`` (and the load tests).

``serve_subprocess`` runs the real CLI in a child process on a free loopback port and stops it after;
``service_figures`` takes a /health snapshot and the start-up time, sends a built-in set of bad uploads,
loads /detect and /detect/batch, finds the max rate under an SLO (bench.load.findmax: the same step rule as
``bench load --find-max``, so one service gets one answer) and compares the service's p50 with the
in-process p50 of the same variant, so the report can show the HTTP overhead. The machine's noise over the
load phase is recorded, the served model's own CPU time apart (it is the measurement, not a neighbour).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from bench import datasets
from bench.affinity import parse_cpus, pinned
from bench.bundle import Bundle, resolve_model_dir
from bench.errors import BenchError
from bench.load import DEFAULT_SLO_P99_MS, LoadSpec, StepRule, run_find_max, run_load
from bench.load.findmax import MAX_STEPS, MIN_STEP_S
from bench.noise import NoiseProbe, intra_op_threads
from bench.providers import is_gpu
from bench.results import Noise, ServiceEntry
from bench.runner import RunOptions, measure_cell
from bench.service.server import LISTENING_PREFIX
from bench.settings import check, recorded, setting
from bench.timing import LoopSpec
from bench.variants import ensure_variant


class ServiceStartError(BenchError):
    """``bench serve`` did not become ready (exited, or not ready in time)."""

    exit_code = 4


@dataclass(frozen=True)
class ServiceRunSpec:
    """How ``bench matrix --with-service`` loads each served variant; recorded as ``config.service_options``.

    Find-max steps as ``bench load --find-max`` does (bench.load.findmax.StepRule), so the SLO is the one
    setting of the search a matrix takes; ``budget_s`` bounds the whole service phase, shared out evenly
    among the variants still to serve (each variant's find-max then reports its bracket so far).
    """

    rate: float = setting(
        20.0,
        flag="--service-rate",
        help="With --with-service: /detect load rate (requests/s, open loop).",
        role="record",
        minimum=0,
        above=True,
    )
    duration_s: float = setting(
        5.0,
        flag="--service-duration",
        help="With --with-service: seconds of /detect and /detect/batch load (a longer run shows slower leaks).",
        role="record",
        minimum=0,
        above=True,
    )
    slo_p99_ms: float = setting(
        DEFAULT_SLO_P99_MS,
        flag="--service-slo",
        help="With --with-service: the p99 latency SLO (ms) of each variant's max-rate search (as bench load "
        "--p99-slo).",
        role="record",
        minimum=0,
        above=True,
    )
    server_cpus: str | None = setting(
        None,
        flag="--service-cpus",
        help="With --with-service: pin each served model to these CPUs (bench serve --cpus; Linux).",
        role="record",
    )
    load_cpus: str | None = setting(
        None,
        flag="--load-cpus",
        help="With --with-service: pin the load generator (this process, during the service phase) to these CPUs "
        "(bench load --cpus). With --service-cpus on other CPUs the two stop trading cores.",
        role="record",
    )
    budget_s: float | None = setting(
        None,
        flag="--service-budget",
        help="With --with-service: seconds the whole service phase may take; each variant gets an even share of "
        "what is left, and a max-rate search that reaches it reports its bracket so far ('budget reached').",
        role="record",
        minimum=0,
        above=True,
        default_text="none",
    )

    def __post_init__(self) -> None:
        check(self)
        for flag, cpus in (("--service-cpus", self.server_cpus), ("--load-cpus", self.load_cpus)):
            if cpus is not None:
                parse_cpus(cpus, flag)  # a bad list fails before the matrix, not after it

    def as_config(self) -> dict[str, Any]:
        return recorded(self)


def _get_text(url: str, timeout_s: float = 2.0) -> tuple[int | None, str | None]:
    """(status, body) of a GET, without proxies; (None, None) when nothing answered."""
    import urllib.error  # urllib.request pulls in ssl and http.client: ~8 ms off `bench --help`
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503 while loading still carries a JSON body
        status, body = exc.code, exc.read()
    except OSError:
        return None, None
    return status, body.decode("utf-8", errors="replace")


def _get_json(url: str, timeout_s: float = 2.0) -> tuple[int | None, Any]:
    """(status, parsed JSON body or None) of a GET; (None, None) when nothing answered."""
    status, body = _get_text(url, timeout_s)
    try:
        return status, None if body is None else json.loads(body)
    except ValueError:
        return status, None


@contextlib.contextmanager
def serve_subprocess(
    model_dir: str | Path | None, variant: str = "fp32", provider: str = "cpu", **options: Any
) -> Iterator[str]:
    """Start ``bench serve`` on a free loopback port, wait for /health/ready, yield its base URL, stop it.

    ``options``: :func:`served`'s (``port``, ``extra_args``, ``env``, ``ready_timeout_s``).
    """
    with served(model_dir, variant, provider, **options) as (base, _pid):
        yield base


@contextlib.contextmanager
def served(
    model_dir: str | Path | None,
    variant: str = "fp32",
    provider: str = "cpu",
    *,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 120.0,
) -> Iterator[tuple[str, int]]:
    """:func:`serve_subprocess`, yielding (base URL, the server's pid: its CPU time is the measurement, not noise).

    ``env`` entries are added to this process's environment (e.g. BENCH_FAULTS for a slow server).
    """
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "serve",
        "--variant",
        variant,
        "--provider",
        provider,
        "--host",
        "127.0.0.1",
        "--port",
        str(port or 0),
        *extra_args,
    ]
    if model_dir is not None:
        cmd[4:4] = ["--model-dir", str(model_dir)]
    base = None  # port 0: the server binds a free port itself and names it on its first line (no race)
    with tempfile.TemporaryFile(mode="w+b") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )

        def tail() -> str:
            lines = _written(log_file).strip().splitlines()
            return " | ".join(lines[-5:]) or "(no output)"

        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    raise ServiceStartError(f"bench serve exited with {proc.returncode} before it was ready: {tail()}")
                if base is None:
                    base = _listening_url(log_file)
                    if base is None:
                        if time.monotonic() > deadline:
                            raise ServiceStartError(f"bench serve did not bind after {ready_timeout_s:g} s: {tail()}")
                        time.sleep(0.05)
                        continue
                if _get_json(base + "/health/ready")[0] == 200:
                    break
                health = _get_json(base + "/health")[1]
                if isinstance(health, dict) and health.get("model_state") == "failed":
                    raise ServiceStartError(f"bench serve could not load the model: {health.get('reason')}")
                if time.monotonic() > deadline:
                    raise ServiceStartError(f"bench serve was not ready after {ready_timeout_s:g} s: {tail()}")
                time.sleep(0.1)
            yield base, proc.pid
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _written(log_file: IO[bytes]) -> str:
    """What the server has written to ``log_file`` so far, read with pread: the child writes through the same
    open file, so a seek here would move its offset too and its next line would overwrite the first ones."""
    fd = log_file.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def _listening_url(log_file: IO[bytes]) -> str | None:
    """The base URL from ``bench serve``'s "listening on URL;" line, once it has been written."""
    for line in _written(log_file).splitlines():
        if line.startswith(LISTENING_PREFIX):
            return line[len(LISTENING_PREFIX) :].split(";", 1)[0].strip()
    return None


# Bad uploads every service run answers (CLI.md's status codes): (case, endpoint, expected status). The bodies
# are made by _bad_upload_parts.
BAD_UPLOADS: tuple[tuple[str, str, int], ...] = (
    ("text_as_image", "detect", 415),  # a text file: not an image type we accept
    ("empty_file", "detect", 400),  # a zero-byte image upload
    ("truncated_jpeg", "detect", 400),  # the first half of a real JPEG
    ("too_many_pixels", "detect", 413),  # a 5000 × 5000 PNG: over the default --max-pixels (4096²) by its header
    ("missing_field", "detect", 422),  # the image under another field name than `file`
    ("empty_batch", "batch", 400),  # /detect/batch with an empty `files` slot only
)


def _bad_upload_parts(case: str) -> list[tuple[str, str | None, bytes, str | None]]:
    """Multipart parts (field, filename, data, content type) of one BAD_UPLOADS case."""
    import io

    from PIL import Image

    if case == "text_as_image":
        return [("file", "note.txt", b"plain text, not an image\n", "text/plain")]
    if case == "empty_file":
        return [("file", "empty.png", b"", "image/png")]
    if case in ("truncated_jpeg", "missing_field"):
        buf = io.BytesIO()
        Image.new("RGB", (96, 96), (120, 60, 30)).save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        if case == "truncated_jpeg":
            return [("file", "cut.jpg", data[: len(data) // 2], "image/jpeg")]
        return [("image", "face.jpg", data, "image/jpeg")]
    if case == "too_many_pixels":
        buf = io.BytesIO()
        Image.new("L", (5000, 5000)).save(buf, format="PNG")
        return [("file", "huge.png", buf.getvalue(), "image/png")]
    if case == "empty_batch":
        return [("files", "", b"", "application/octet-stream")]
    raise ValueError(case)


def _post_multipart(
    url: str, parts: list[tuple[str, str | None, bytes, str | None]], timeout_s: float = 10.0
) -> int | None:
    """The status code of one multipart POST (None when nothing answered), without proxies."""
    import urllib.error
    import urllib.request
    import uuid

    boundary = f"bench-{uuid.uuid4().hex}"
    body = b""
    for name, filename, data, content_type in parts:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += f"Content-Type: {content_type}\r\n" if content_type else ""
        body += (head + "\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def bad_upload_statuses(base: str) -> list[dict[str, Any]]:
    """Send every BAD_UPLOADS case to a running service: case, endpoint, expected and actual status."""
    paths = {"detect": "/detect", "batch": "/detect/batch"}
    return [
        {
            "case": case,
            "endpoint": paths[endpoint],
            "expected": expected,
            "status": _post_multipart(base + paths[endpoint], _bad_upload_parts(case)),
        }
        for case, endpoint, expected in BAD_UPLOADS
    ]


def metrics_probe(base: str) -> dict[str, Any]:
    """GET /metrics: its status, and whether the body is Prometheus text (a ``# TYPE`` line)."""
    status, body = _get_text(base + "/metrics")
    return {"http_status": status, "prometheus": body is not None and "# TYPE " in body}


def health_snapshot(base: str) -> dict[str, Any]:
    """GET /health: its HTTP status and body (the seed's shape plus bench's extras)."""
    status, body = _get_json(base + "/health")
    return {"http_status": status, "body": body}


def inprocess_p50(model_dir: str | Path | None, variant: str, provider: str, iterations: int = 200) -> float | None:
    """bench's in-process latency p50 (ms) of one variant/provider at batch 1 (bench.runner.measure_cell)."""
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
    slo_p99_ms: float = DEFAULT_SLO_P99_MS,
    find_max_start: float | None = None,
    find_max_step_s: float = MIN_STEP_S,
    find_max_step_requests: int | None = None,
    find_max_steps: int = MAX_STEPS,
    deadline: float | None = None,
    inprocess_p50_ms: float | None = None,
    serve_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    log: Callable[[str], None] | None = None,
    server_cpus: str | None = None,
    load_cpus: str | None = None,
) -> ServiceEntry:
    """One RunResult.service entry: start ``bench serve``, load /detect, /detect/batch, find the max rate, stop.

    The max-rate search is ``bench load --find-max``'s (the same StepRule and defaults: ``find_max_start`` None
    starts near half the closed-loop capacity); ``find_max_step_requests`` below the rule's is for tests only (such
    steps cannot pass). ``deadline`` (time.monotonic()) bounds the search: a step that would end past it is not
    started and the bracket so far is reported ("budget reached"). Never raises for a service that cannot start
    or a provider that cannot run: the entry then has ``status`` "unavailable"/"failed" and a ``reason``, with
    the figures null. ``server_cpus`` / ``load_cpus``: the server (``bench serve --cpus``) and this process's load
    generator pinned, each to its own CPUs (bench.affinity).
    """
    if images is None or isinstance(images, (str, Path)):
        paths = tuple(datasets.image_files(datasets.resolve_dataset(images)))
    else:
        paths = tuple(images)
    entry: dict[str, Any] = {
        "variant": variant,
        "provider": provider,
        "status": "ok",
        "reason": None,
        "load": None,
        "inprocess_p50_ms": None,
        "overhead_p50_ms": None,
        "batch_endpoint": None,
        "max_rate": None,
        "noise": None,  # the load phase's: what else the machine did (the served model's own CPU time apart)
        "health": None,  # /health once ready: http_status, body
        "startup": None,  # spawn → ready (s), the model's load and warm-up time (ms) from /health
        "invalid_inputs": None,  # BAD_UPLOADS: case, endpoint, expected, status
        "metrics": None,  # GET /metrics after the load
    }
    say = log or (lambda _msg: None)
    if inprocess_p50_ms is None:
        say(f"service {variant}/{provider}: in-process p50 at batch 1")
        inprocess_p50_ms = inprocess_p50(model_dir, variant, provider)
        if inprocess_p50_ms is None:
            return cast(
                ServiceEntry,
                {
                    **entry,
                    "status": "unavailable",
                    "reason": f"{variant} on {provider} cannot run in-process here, so the service was not started",
                },
            )
    entry["inprocess_p50_ms"] = round(inprocess_p50_ms, 3)
    spawned = time.monotonic()
    rule = StepRule(
        slo_p99_ms=slo_p99_ms, min_step_s=find_max_step_s, max_steps=find_max_steps, requests=find_max_step_requests
    )
    # bench serve runs ORT's default threads, or one per CPU it is pinned to
    threads = None if is_gpu(provider) else len(parse_cpus(server_cpus)) if server_cpus else intra_op_threads(None)
    serve_args = [*serve_args, *(["--cpus", server_cpus] if server_cpus else [])]
    try:
        with (
            served(model_dir, variant, provider, extra_args=serve_args, env=env, ready_timeout_s=ready_timeout_s) as (
                base,
                pid,
            ),
            pinned(parse_cpus(load_cpus, "--load-cpus") if load_cpus else None),
        ):
            ready_s = time.monotonic() - spawned
            health = health_snapshot(base)
            model = (health.get("body") or {}).get("model") or {}
            entry["health"] = health
            entry["startup"] = {
                "ready_s": round(ready_s, 3),
                "load_ms": model.get("load_ms"),
                "warmup_ms": model.get("warmup_ms"),
            }
            say(f"service {variant}/{provider}: ready at {base} in {ready_s:.1f} s; {len(BAD_UPLOADS)} bad uploads")
            entry["invalid_inputs"] = bad_upload_statuses(base)
            noise = NoiseProbe(threads, own_pids=[pid])
            with noise:
                say(f"service {variant}/{provider}: detect load {rate:g}/s for {duration_s:g} s")
                detect = run_load(LoadSpec(url=base, endpoint="detect", rate=rate, duration_s=duration_s, images=paths))
                say(f"service {variant}/{provider}: batch endpoint, {batch_files} files × {batch_rate:g}/s")
                batch = run_load(
                    LoadSpec(
                        url=base,
                        endpoint="batch",
                        rate=batch_rate,
                        duration_s=duration_s,
                        images=paths,
                        files_per_request=batch_files,
                        measure_ceiling=False,
                    )
                )
                say(f"service {variant}/{provider}: find-max under p99 ≤ {slo_p99_ms:g} ms")
                best = run_find_max(
                    LoadSpec(url=base, endpoint="detect", rate=find_max_start or 10.0, images=paths),
                    rule,
                    start_rate=find_max_start,
                    log=log,
                    ceiling=detect.generator_ceiling_rps,
                    deadline=deadline,
                    pids=[pid],
                    threads=threads,
                )
            entry["noise"] = cast(Noise, noise.figures())
            entry["metrics"] = metrics_probe(base)  # the seed's "/metrics answers" claim
    except ServiceStartError as exc:
        return cast(ServiceEntry, {**entry, "status": "failed", "reason": str(exc)})
    p50 = detect.latency_ms.get("p50")
    bp50 = batch.latency_ms.get("p50")
    entry.update(
        {
            "load": detect.to_dict(),
            "overhead_p50_ms": None if p50 is None else round(p50 - inprocess_p50_ms, 3),
            "batch_endpoint": {
                "files_per_request": batch_files,
                "rate": batch_rate,
                "requests": batch.requests,
                "ok": batch.ok,
                "errors": batch.errors,
                "latency_ms": batch.latency_ms,
                "ms_per_image_p50": None if bp50 is None else round(bp50 / batch_files, 3),
                "images_per_s": round(batch.throughput_rps * batch_files, 3) if batch.throughput_rps else None,
            },
            "max_rate": {k: v for k, v in (best.max_rate or {}).items()},
        }
    )
    if detect.ok == 0:
        entry.update(status="failed", reason=f"no successful /detect responses ({detect.errors})")
    return cast(ServiceEntry, entry)
