#!/usr/bin/env python3
"""Detect service: dynamic batching on vs off at 1/8/32 concurrent clients, and RSS over 5,000 requests.

Not part of the test run (pytest ignores tests/benchmarks/). The server runs as ``bench serve`` pinned to
one core (``taskset -c SERVER_CORE``), this script's async httpx client to another, so the table measures
the server, not the two fighting over a core. Closed loop: each client sends its next /detect as soon as
the previous one answered.

    python tests/benchmarks/service_batching.py                      # demo bundle, cores 0 (server) / 1 (client)
    python tests/benchmarks/service_batching.py --duration 5 --repeat 1 --json out.json

Without a complete ./variants/demo (config.json + onnx/model.onnx) it generates a 224 px ViT-shaped bundle
(tests/models.py) and says so in its output.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def pick_bundle(model_dir: str | None, work: Path) -> tuple[Path, str]:
    if model_dir:
        return Path(model_dir), f"{model_dir} (given)"
    demo = REPO / "variants" / "demo"
    if (demo / "config.json").is_file() and (demo / "onnx" / "model.onnx").is_file():
        return demo, "variants/demo (the bundled demo model)"
    from models import make_bundle

    root = make_bundle(work / "vit224", size=224, hidden=192)
    return root, "generated 224 px ViT-shaped bundle (tests/models.py, hidden 192) — variants/demo not complete yet"


def test_image(size: int = 256) -> bytes:
    rng = np.random.default_rng(7)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB").filter(ImageFilter.GaussianBlur(3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Server:
    """``bench serve`` in a subprocess pinned to one core; waits for its ready line."""

    def __init__(self, bundle: Path, core: int, threads: int, extra: list[str], fault_delay_ms: float = 0.0):
        cmd = [
            "taskset",
            "-c",
            str(core),
            sys.executable,
            "-m",
            "bench",
            "serve",
            "--model-dir",
            str(bundle),
            "--port",
            "0",
            "--threads",
            str(threads),
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if k != "BENCH_FAULTS"}
        if fault_delay_ms:  # test-only slow-server hook: a fixed cost per inference call, as on a GPU
            env["BENCH_FAULTS"] = json.dumps({"service_delay_ms": fault_delay_ms})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in iter(self.proc.stderr.readline, "")], daemon=True
        ).start()
        deadline = time.monotonic() + 120
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bench serve exited {self.proc.returncode}") from None
                continue
            m = re.match(r"bench serve: ready on (\S+)", line)
            if m:
                self.url = m.group(1)
            elif "model not loaded" in line:
                raise RuntimeError(line.strip())
        if not self.url:
            raise RuntimeError("bench serve did not become ready in 120 s")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def rss_mb(self) -> float:
        return float(httpx.get(self.url + "/health", timeout=10).json()["process"]["rss_mb"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


async def closed_loop(
    url: str,
    data: bytes | None,
    clients: int,
    duration_s: float | None = None,
    requests: int | None = None,
    warmup_s: float = 1.0,
) -> dict[str, Any]:
    """``clients`` workers each sending /detect back to back (``data=None``: GET /health/live); latencies
    after the warm-up. One AsyncClient (one connection) per worker: a shared httpx pool costs the client
    more CPU than the server spends at 32 connections, and the table would measure httpx."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s if duration_s is not None else float("inf")

    async def worker() -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as c:
            while True:
                if requests is not None:
                    if sent >= requests:
                        return
                    sent += 1
                elif time.perf_counter() >= t_end:
                    return
                t0 = time.perf_counter()
                try:
                    if data is None:
                        r = await c.get("/health/live")
                    else:
                        r = await c.post("/detect", files={"file": ("x.jpg", data, "image/jpeg")})
                    key = None if r.status_code == 200 else str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                t1 = time.perf_counter()
                if requests is not None or t0 >= t_measure:
                    if key is None:
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors[key] = errors.get(key, 0) + 1

    cpu0 = time.process_time()
    await asyncio.gather(*[worker() for _ in range(clients)])
    wall = time.perf_counter() - (t_start if requests is not None else t_measure)
    cpu = time.process_time() - cpu0
    lat = np.asarray(latencies)
    return {
        "clients": clients,
        "ok": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "client_cpu_pct": 100 * cpu / (wall + (warmup_s if requests is None else 0)),
    }


def batch_stats(url: str) -> tuple[float, float]:
    """(inference calls, images) so far, from /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    count = float(re.search(r"^bench_service_batch_size_count (\S+)$", text, re.M).group(1))
    total = float(re.search(r"^bench_service_batch_size_sum (\S+)$", text, re.M).group(1))
    return count, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--duration", type=float, default=8.0, help="Measured seconds per cell (after 1 s warm-up).")
    ap.add_argument("--server-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of the server (its one core).")
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3, help="Interleaved repetitions per cell (medians reported).")
    ap.add_argument("--rss-requests", type=int, default=5000)
    ap.add_argument("--rss-clients", type=int, default=8)
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument(
        "--fault-delay-ms",
        type=float,
        default=0.0,
        help="Add a fixed sleep per inference call (BENCH_FAULTS service_delay_ms), e.g. to model a "
        "per-call launch/sync cost; the RSS check never uses it.",
    )
    ap.add_argument("--json", default=None, help="Write the raw figures here.")
    args = ap.parse_args()

    os.sched_setaffinity(0, {args.client_core})
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="svc-bench-"))
    bundle, described = pick_bundle(args.model_dir, work)
    data = test_image()
    clients = [int(x) for x in args.clients.split(",")]
    if args.fault_delay_ms:
        print(f"fault: every inference call sleeps {args.fault_delay_ms:g} ms more (BENCH_FAULTS)")
    print(
        f"model: {described}\nimage: {len(data):,} bytes JPEG 256×256 · server core {args.server_core} "
        f"(ORT threads {args.threads}) · client core {args.client_core} · {os.cpu_count()} CPUs on this machine",
        flush=True,
    )
    out: dict[str, Any] = {"model": described, "rows": [], "rss": None}

    modes = (
        []
        if args.skip_table
        else [
            ("on", ["--max-batch", "16", "--max-delay-ms", str(args.max_delay_ms)]),
            ("off", ["--max-batch", "1"]),
        ]
    )
    # Both servers stay up (idle costs nothing); cells run interleaved, --repeat times, and the table
    # shows medians: other processes on the machine then hit both modes alike.
    servers = {
        mode: Server(bundle, args.server_core, args.threads, extra, args.fault_delay_ms) for mode, extra in modes
    }
    try:
        if servers:  # what the client alone can do here: a trivial endpoint, same concurrency
            any_url = next(iter(servers.values())).url
            out["client_ceiling_rps"] = {}
            for n in clients:
                ceiling = asyncio.run(closed_loop(any_url, None, n, duration_s=2.0, warmup_s=0.5))
                out["client_ceiling_rps"][n] = ceiling["throughput_rps"]
                print(
                    f"client ceiling (GET /health/live) · {n:2} clients · {ceiling['throughput_rps']:.0f} req/s",
                    flush=True,
                )
        for rep in range(args.repeat):
            for n in clients:
                for mode, server in servers.items():
                    calls0, images0 = batch_stats(server.url)
                    cpu0 = server.cpu_s()
                    row = asyncio.run(closed_loop(server.url, data, n, duration_s=args.duration))
                    cpu1 = server.cpu_s()
                    calls1, images1 = batch_stats(server.url)
                    row.update(
                        mode=mode,
                        repeat=rep,
                        mean_batch=(images1 - images0) / max(1.0, calls1 - calls0),
                        server_cpu_ms_per_req=1000 * (cpu1 - cpu0) / max(1.0, images1 - images0),
                    )
                    out["rows"].append(row)
                    print(
                        f"[{rep}] batching {mode:3} · {n:2} clients · {row['throughput_rps']:7.1f} req/s · "
                        f"p50 {row['p50_ms']:7.2f} ms · p99 {row['p99_ms']:7.2f} ms · mean batch "
                        f"{row['mean_batch']:.2f} · server CPU {row['server_cpu_ms_per_req']:.2f} ms/req · "
                        f"errors {row['errors'] or 0} · client CPU {row['client_cpu_pct']:.0f}%",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    if modes:
        print(
            "\n| batching | clients | req/s | p50 ms | p99 ms | mean batch | server CPU ms/req |\n"
            "|---|---:|---:|---:|---:|---:|---:|"
        )
        for n in clients:
            for mode, _ in modes:
                rows = [r for r in out["rows"] if r["mode"] == mode and r["clients"] == n]

                def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
                    return float(np.median([r[key] for r in rows]))

                print(
                    f"| {mode} | {n} | {med('throughput_rps'):.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | "
                    f"{med('mean_batch'):.2f} | {med('server_cpu_ms_per_req'):.2f} |"
                )
        print(flush=True)

    if args.rss_requests:
        server = Server(bundle, args.server_core, args.threads, ["--max-delay-ms", str(args.max_delay_ms)])
        try:
            asyncio.run(closed_loop(server.url, data, args.rss_clients, requests=500))  # warm-up
            before = server.rss_mb()
            half = asyncio.run(closed_loop(server.url, data, args.rss_clients, requests=args.rss_requests // 2))
            mid = server.rss_mb()
            rest = asyncio.run(
                closed_loop(server.url, data, args.rss_clients, requests=args.rss_requests - args.rss_requests // 2)
            )
            after = server.rss_mb()
            served = httpx.get(server.url + "/health", timeout=10).json()["requests_served"]
        finally:
            server.stop()
        ok = half["ok"] + rest["ok"]
        out["rss"] = {
            "warmup_requests": 500,
            "requests": args.rss_requests,
            "ok": ok,
            "errors": {**half["errors"], **rest["errors"]},
            "requests_served": served,
            "rss_before_mb": before,
            "rss_mid_mb": mid,
            "rss_after_mb": after,
            "delta_mb": after - before,
        }
        print(
            f"RSS: {before:.1f} MB after 500 warm-up requests → {mid:.1f} MB after {args.rss_requests // 2:,} → "
            f"{after:.1f} MB after {args.rss_requests:,} ({ok:,} ok; Δ {after - before:+.1f} MB)",
            flush=True,
        )

    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
