"""Cross-check `bench load --rate R` (open loop) against h2load's rate-limited mode on /detect, same image and rate.

    apt-get install -y nghttp2-client
    python tests/benchmarks/openloop_crosscheck.py --rates 50,100,150 --duration 10

h2load (nghttp2) is the independent client: `--h1 -c C --rps R/C` paces each of C connections at R/C
requests per second. How open is that loop? Only as long as answers come back within C/R seconds: over
HTTP/1.1 a connection carries one request at a time, so when the service is slower than that, h2load waits
(its schedule slips, like a closed loop with C in flight), where bench keeps sending on schedule and
counts latency from the scheduled time. Below saturation the two must agree; near it, bench's latencies
are the honest (larger) ones. Latency percentiles for h2load come from its --log-file (per request).

Hence the default of one connection: with C > 1 the per-connection timers start together and fire
together, so h2load sends bursts of C requests every C/R seconds, not a constant rate — measured on the
demo service at 50/s with -c 8: h2load p50 26.9 ms against bench's 5.5 ms (the queue behind a burst of 8),
and 4.8 ms mean with -c 1. One connection keeps h2load's arrivals constant, like ``bench load``'s default,
for rates whose interval is longer than a request (here up to ~200/s).
Exit 0 when every rate agrees within --tolerance (achieved rate and p50), 1 when one does not, 2 when
h2load is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import encode_multipart
from bench.service.harness import serve_subprocess

REPO = Path(__file__).resolve().parents[2]


def run_h2load(url: str, body: Path, content_type: str, rate: float, connections: int, duration_s: float) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        cmd = [
            "h2load",
            "--h1",
            "-c",
            str(connections),
            "-D",
            f"{duration_s:g}",
            "--rps",
            f"{rate / connections:g}",
            "-d",
            str(body),
            "-H",
            f"content-type: {content_type}",
            "--log-file",
            log.name,
            f"{url}/detect",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
        rows = [line.split() for line in log.read().splitlines() if line.strip()]
    done = [r for r in rows if r[1] == "200"]
    lat = np.array([int(r[2]) / 1000.0 for r in done])  # elapsed µs → ms
    if proc.returncode != 0 or lat.size == 0:
        return {"error": (proc.stderr or proc.stdout)[-300:]}
    return {
        "requests": len(rows),
        "ok": len(done),
        "achieved_rate": round(len(rows) / duration_s, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
    }


def run_bench(url: str, image: Path, rate: float, duration_s: float) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "load",
            "--url",
            url,
            "--rate",
            f"{rate:g}",
            "--duration",
            f"{duration_s:g}",
            "--images",
            str(image),
            "--no-ceiling",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
    )
    data = json.loads(proc.stdout)
    return {
        "requests": data["requests"],
        "ok": data["ok"],
        "achieved_rate": data["achieved_rate"],
        "p50_ms": data["latency_ms"]["p50"],
        "p99_ms": data["latency_ms"]["p99"],
        "send_lag_p99_ms": data["send_lag_ms"]["p99"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default=str(REPO / "variants" / "demo"))
    ap.add_argument("--rates", default="50,100,150")
    ap.add_argument(
        "--connections", type=int, default=1, help="h2load connections (its most in flight; > 1 sends bursts)"
    )
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.25)
    args = ap.parse_args()
    if shutil.which("h2load") is None:
        print("h2load is not installed (apt-get install -y nghttp2-client)", file=sys.stderr)
        return 2
    image = sorted((REPO / "datasets" / "demo").rglob("*.png"))[0]
    folder = Path(tempfile.mkdtemp(prefix="crosscheck-"))  # bench load takes a folder: one with this one image
    (folder / image.name).write_bytes(image.read_bytes())
    boundary = "benchcrosscheck"
    payload = encode_multipart("file", [(image.name, image.read_bytes(), "image/png")], boundary)
    content_type = f"multipart/form-data; boundary={boundary}"
    rows: list[dict[str, Any]] = []
    worst = 0.0
    with tempfile.NamedTemporaryFile("wb", suffix=".body") as body, serve_subprocess(args.model_dir) as url:
        body.write(payload)
        body.flush()
        for rate in (float(r) for r in args.rates.split(",")):
            h2, bl = [], []
            for _ in range(args.repeats):
                h2.append(run_h2load(url, Path(body.name), content_type, rate, args.connections, args.duration))
                bl.append(run_bench(url, folder, rate, args.duration))
            row: dict[str, Any] = {"rate": rate, "h2load": h2, "bench": bl}
            if all("error" not in r for r in h2):
                for key in ("achieved_rate", "p50_ms", "p99_ms"):
                    a = statistics.median(r[key] for r in h2)
                    b = statistics.median(r[key] for r in bl)
                    row[f"{key}_h2load"], row[f"{key}_bench"] = a, b
                    row[f"{key}_delta"] = round((b - a) / a, 3)
                worst = max(worst, abs(row["achieved_rate_delta"]), abs(row["p50_ms_delta"]))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("h2load", "bench")}), flush=True)
    print(json.dumps(rows, indent=2))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
