"""Is the service's max rate worth quoting? N quiet find-max runs of one served variant, standalone and in a matrix.

    python tests/benchmarks/maxrate.py                       # 3 × standalone + 3 × matrix, demo fp32 on cpu
    python tests/benchmarks/maxrate.py --runs 1 --budget 40  # a quick proof that it works (brackets cut short)
    python tests/benchmarks/maxrate.py --pin 1:0              # server on CPU 1, load generator on CPU 0

The target (issue 24): 3 quiet runs of the demo fp32 service agree within ±10 %, standalone and in the matrix.
Standalone: a fresh ``bench serve`` per run, loaded by ``bench load --find-max --json`` (the real CLI, in a
child process). Matrix: a one-variant ``bench matrix --with-service`` per run (cpu, batch 1, no accuracy),
whose ``service[0].max_rate`` is read from its results.json. Both use the same step rule and SLO, so a service
must give the same answer either way. Each run's raw find-max record (bracket, the p99 and its interval at
each edge, every step, the noise it was measured in) goes to ``--out`` (default
``docs/measurements/maxrate.json``) with the spread of the brackets' lower edges. A run whose find-max was
noisy (others used the CPU) does not count as quiet: the script says so and the target is not judged on it.
``--pin SERVER:LOAD`` pins the server (``bench serve --cpus`` / ``bench matrix --service-cpus``) and the load
generator (``bench load --cpus`` / ``--load-cpus``) to their own CPUs in both kinds of run.

Exit 0 when every set of runs and both sets' medians lie within ±``--tolerance`` of each other, 1 when not
(or when too few quiet runs were made), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import environment
from bench.bundle import resolve_model_dir
from bench.load import DEFAULT_SLO_P99_MS
from bench.noise import noisy_figure
from bench.service.harness import serve_subprocess

REPO = Path(__file__).resolve().parents[2]


def standalone(
    model_dir: Path, variant: str, slo: float, budget: float | None, pin: tuple[str, str] | None = None
) -> dict[str, Any]:
    """One fresh ``bench serve`` loaded by ``bench load --find-max --json``: its max_rate record."""
    started = time.monotonic()
    serve_args = ["--cpus", pin[0]] if pin else []
    with serve_subprocess(model_dir, variant, "cpu", ready_timeout_s=180, extra_args=serve_args) as url:
        cmd = [sys.executable, "-m", "bench", "load", "--url", url, "--find-max", "--p99-slo", f"{slo:g}", "--json"]
        cmd += ["--budget", f"{budget:g}"] if budget else []
        cmd += ["--cpus", pin[1]] if pin else []
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:], "wall_s": round(time.monotonic() - started, 1)}
    return {**json.loads(proc.stdout)["max_rate"], "wall_s": round(time.monotonic() - started, 1)}


def in_matrix(
    model_dir: Path, variant: str, slo: float, budget: float | None, out: Path, pin: tuple[str, str] | None = None
) -> dict[str, Any]:
    """A one-variant ``bench matrix --with-service`` (cpu, batch 1, no accuracy): its service's max_rate record."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "bench", "matrix", "--model-dir", str(model_dir), "--variants", variant]
    cmd += ["--providers", "cpu", "--batch-sizes", "1", "--no-accuracy", "--with-service"]
    cmd += ["--service-slo", f"{slo:g}", "--out", str(out)]
    cmd += ["--service-budget", f"{budget:g}"] if budget else []
    cmd += ["--service-cpus", pin[0], "--load-cpus", pin[1]] if pin else []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = round(time.monotonic() - started, 1)
    results = out / "results.json"
    if proc.returncode != 0 or not results.is_file():
        return {"error": proc.stderr[-500:], "wall_s": wall}
    service = json.loads(results.read_text(encoding="utf-8")).get("service") or [{}]
    entry = service[0]
    if entry.get("status") != "ok":
        return {"error": f"service {entry.get('status')}: {entry.get('reason')}", "wall_s": wall}
    return {**(entry.get("max_rate") or {}), "service_noise": entry.get("noise"), "wall_s": wall}


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The lower edges of the quiet runs' brackets: median and each one's deviation from it."""
    quiet = [r for r in runs if "error" not in r and not noisy_figure(r)]
    lows = [r["bracket"][0] for r in quiet if r.get("bracket") and r["bracket"][0] is not None]
    if not lows:
        return {"quiet_runs": len(quiet), "lower_edges": [], "median": None, "max_deviation": None}
    median = statistics.median(lows)
    return {
        "quiet_runs": len(quiet),
        "noisy_runs": sum(1 for r in runs if "error" not in r and noisy_figure(r)),
        "lower_edges": lows,
        "upper_edges": [r["bracket"][1] for r in quiet if r.get("bracket")],
        "median": median,
        "max_deviation": round(max(abs(x / median - 1) for x in lows), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="Model folder (default: the demo).")
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--runs", type=int, default=3, help="Runs of each kind (standalone, matrix).")
    parser.add_argument("--slo", type=float, default=DEFAULT_SLO_P99_MS, help="p99 SLO in ms (both kinds).")
    parser.add_argument("--budget", type=float, default=None, help="Seconds each find-max may take (proof runs).")
    parser.add_argument("--tolerance", type=float, default=0.10, help="Agreement asked for (±, relative).")
    parser.add_argument(
        "--pin", default=None, metavar="SERVER:LOAD", help="CPU lists for the server and the generator, e.g. 1:0"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "measurements" / "maxrate.json")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.slo <= 0 or (args.budget is not None and args.budget <= 0):
        parser.error("--runs must be ≥ 1, --slo and --budget > 0")
    pin = None
    if args.pin is not None:
        server, colon, generator = args.pin.partition(":")
        if not colon or not server or not generator:
            parser.error("--pin takes SERVER:LOAD CPU lists, e.g. 1:0")
        pin = (server, generator)
    model_dir = resolve_model_dir(args.model_dir)
    record: dict[str, Any] = {
        "kind": "bench maxrate reproducibility",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "model_dir": str(model_dir),
        "variant": args.variant,
        "slo_p99_ms": args.slo,
        "budget_s": args.budget,
        "tolerance": args.tolerance,
        "pin": {"server_cpus": pin[0], "load_cpus": pin[1]} if pin else None,
        "environment": {k: environment.fingerprint().get(k) for k in ("machine_id", "cpu", "onnxruntime", "python")},
        "standalone": [],
        "matrix": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-maxrate-") as work:
        for i in range(args.runs):  # alternated, so drift falls on both kinds alike
            run = standalone(model_dir, args.variant, args.slo, args.budget, pin)
            record["standalone"].append(run)
            print(f"standalone {i + 1}: {_line(run)}", file=sys.stderr)
            run = in_matrix(model_dir, args.variant, args.slo, args.budget, Path(work) / f"matrix-{i}", pin)
            record["matrix"].append(run)
            print(f"matrix {i + 1}: {_line(run)}", file=sys.stderr)
    alone, matrix = spread(record["standalone"]), spread(record["matrix"])
    between = None
    if alone["median"] and matrix["median"]:
        between = round(abs(matrix["median"] / alone["median"] - 1), 4)
    quiet_enough = alone["quiet_runs"] == matrix["quiet_runs"] == args.runs
    within = (
        quiet_enough
        and between is not None
        and max(alone["max_deviation"], matrix["max_deviation"], between) <= args.tolerance
    )
    record["summary"] = {
        "standalone": alone,
        "matrix": matrix,
        "standalone_vs_matrix": between,
        "all_quiet": quiet_enough,
        "within_tolerance": within,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record["summary"], indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if within else 1


def _line(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"error — {run['error']}"
    why = noisy_figure(run)
    return (
        f"bracket {run.get('bracket')} req/s, {run.get('probes')} probes, stopped by {run.get('limited_by')}, "
        f"{run['wall_s']:g} s" + (f" ⚠ noisy: {why}" if why else "")
    )


if __name__ == "__main__":
    sys.exit(main())
