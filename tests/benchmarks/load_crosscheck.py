"""Cross-check `bench load --concurrency N` (closed loop, aiohttp) against wrk at the same concurrency on /detect.

Not part of the default test run (it needs wrk and takes a minute). Starts `bench serve`, then for each N
runs wrk (tests/benchmarks/wrk_detect.lua, the same multipart image) and bench's closed loop alternately,
and prints throughput and p50 side by side; both must agree within --tolerance (default 20%).

    apt-get install -y wrk
    python tests/benchmarks/load_crosscheck.py --model-dir variants/demo --concurrency 1,4,8 --duration 10
    python tests/benchmarks/load_crosscheck.py --server-cpus 0-7 --client-cpus 8   # pinned, on a bigger box

Exit 0 when every row agrees, 1 when one does not, 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LUA = Path(__file__).resolve().parent / "wrk_detect.lua"
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def cpus(text: str | None) -> set[int] | None:
    """'0-3,8' → {0, 1, 2, 3, 8}."""
    if not text:
        return None
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def run_wrk(url: str, image: Path, concurrency: int, duration_s: float, client_cpus: set[int] | None) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-c",
        str(concurrency),
        "-t",
        "1",
        "-d",
        f"{duration_s:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"{url}/detect",
        "--",
        str(image),
    ]
    if client_cpus:
        cmd = ["taskset", "-c", ",".join(map(str, sorted(client_cpus))), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50_value, p50_unit = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    p99_value, p99_unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M).groups()  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50_ms": float(p50_value) * UNITS_MS[p50_unit],
        "p99_ms": float(p99_value) * UNITS_MS[p99_unit],
        "requests": total,
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else None,
    }


def run_bench(url: str, image: Path, concurrency: int, duration_s: float) -> dict[str, Any]:
    from bench.load import LoadSpec, run_load

    result = run_load(
        LoadSpec(
            url=url,
            endpoint="detect",
            rate=None,
            concurrency=concurrency,
            duration_s=duration_s,
            images=(image,),
            measure_ceiling=False,
            timeout_s=10,
        )
    )
    return {
        "rps": result.throughput_rps,
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "requests": result.requests,
        "errors": sum(result.errors.values()),
    }


def pct(a: float, b: float) -> float:
    """Relative difference of b against a, in percent."""
    return (b - a) / a * 100 if a else float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(REPO / "variants" / "demo"))
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--image", type=Path, default=None, help="Image to post (default: first of the demo set).")
    parser.add_argument("--concurrency", default="1,4,8", help="Comma list of N.")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per run.")
    parser.add_argument("--repeats", type=int, default=2, help="wrk/bench pairs per N (medians are compared).")
    parser.add_argument("--tolerance", type=float, default=0.20)
    parser.add_argument("--server-cpus", default=None, help="Pin bench serve to these CPUs, e.g. 0-7.")
    parser.add_argument("--client-cpus", default=None, help="Pin wrk and bench's generator to these CPUs, e.g. 8.")
    parser.add_argument("--serve-arg", action="append", default=[], help="Extra `bench serve` argument (repeatable).")
    parser.add_argument("--json", type=Path, default=None, help="Write the rows here as JSON.")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from bench.datasets import image_files, resolve_dataset
    from bench.load import run_load
    from bench.service.harness import serve_subprocess

    image = args.image or image_files(resolve_dataset(None))[0]
    server_cpus, client_cpus = cpus(args.server_cpus), cpus(args.client_cpus)
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)  # the server inherits it; then this process moves to the client CPUs
    rows = []
    with serve_subprocess(args.model_dir, args.variant, args.provider, extra_args=args.serve_arg) as url:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        from bench.load import LoadSpec

        run_load(LoadSpec(url=url, rate=None, concurrency=4, duration_s=2, images=(image,), measure_ceiling=False))
        for n in [int(x) for x in args.concurrency.split(",")]:
            wrk_runs, bench_runs = [], []
            for r in range(args.repeats):  # alternate which goes first, so drift hits both alike
                pair = [
                    ("wrk", lambda n=n: run_wrk(url, image, n, args.duration, client_cpus)),
                    ("bench", lambda n=n: run_bench(url, image, n, args.duration)),
                ]
                for name, fn in pair if r % 2 == 0 else reversed(pair):
                    (wrk_runs if name == "wrk" else bench_runs).append(fn())
            w = {k: statistics.median(x[k] for x in wrk_runs) for k in ("rps", "p50_ms", "p99_ms")}
            b = {k: statistics.median(x[k] for x in bench_runs) for k in ("rps", "p50_ms", "p99_ms")}
            d_rps, d_p50 = pct(w["rps"], b["rps"]), pct(w["p50_ms"], b["p50_ms"])
            rows.append(
                {
                    "concurrency": n,
                    "wrk": w,
                    "bench": b,
                    "diff_rps_pct": round(d_rps, 1),
                    "diff_p50_pct": round(d_p50, 1),
                    "errors": {
                        "wrk": sum(x["errors"] for x in wrk_runs),
                        "bench": sum(x["errors"] for x in bench_runs),
                    },
                    "runs": {"wrk": wrk_runs, "bench": bench_runs},
                    "agree": abs(d_rps) <= args.tolerance * 100 and abs(d_p50) <= args.tolerance * 100,
                }
            )
    print(
        f"model {args.model_dir} {args.variant}/{args.provider} · image {image.name} ({image.stat().st_size} B) · "
        f"{args.duration:g} s × {args.repeats} per tool · server CPUs {args.server_cpus or 'any'} · "
        f"client CPUs {args.client_cpus or 'any'}"
    )
    print(
        "| N | wrk req/s | bench req/s | Δ | wrk p50 ms | bench p50 ms | Δ | wrk p99 ms | bench p99 ms "
        "| errors w/b | agree |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for row in rows:
        w, b = row["wrk"], row["bench"]
        print(
            f"| {row['concurrency']} | {w['rps']:.1f} | {b['rps']:.1f} | {row['diff_rps_pct']:+.1f}% | "
            f"{w['p50_ms']:.2f} | {b['p50_ms']:.2f} | {row['diff_p50_pct']:+.1f}% | {w['p99_ms']:.2f} | "
            f"{b['p99_ms']:.2f} | {row['errors']['wrk']}/{row['errors']['bench']} | "
            f"{'yes' if row['agree'] else 'NO'} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
