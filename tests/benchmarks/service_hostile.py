#!/usr/bin/env python3
"""Detect service under hostile uploads and connections: server RSS peak and CPU per upload, before and after.

Not part of the test run (pytest ignores tests/benchmarks/). "after" is this tree's ``bench serve``; "before"
is the committed code (``git archive HEAD`` exported to --before-tree, default /tmp/old_tree, run with its
own PYTHONPATH), on the same generated 224 px ViT-shaped bundle. Both servers run under a 512 open-file
limit, as in the issue. Hostile files are generated here (tests/service/hostile.py), never stored.

    python tests/benchmarks/service_hostile.py                   # before and after, soak of 10,000 requests
    python tests/benchmarks/service_hostile.py --only after --soak 2000 --json out.json
    python tests/benchmarks/service_hostile.py --sweep           # decode cost per format and size (--max-pixels)

Per hostile upload: the server's RSS peak over its RSS just before (sampled every 2 ms), its CPU seconds
(user + system) and the answer's status and time. Then: a normal /detect sent while a hostile batch is
being decoded, idle RSS after the hostile set vs at start (start = idle after warm-up with normal /detect and
32-file /detect/batch requests), /health/live while 500 partial-header and 100 silent sockets are held,
and RSS over a closed-loop soak of normal /detect requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
                results["before"] = run_side("before", bundle, args.before_tree, work, 0)
            if args.only in (None, "after"):
                results["after"] = run_side("after", bundle, None, work, args.soak)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
