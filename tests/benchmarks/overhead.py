"""Issue 2's measurements of the harness itself, as functions the perf suite asserts on and prints.

Every ratio here is measured the only way that means anything on a noisy shared machine: both
conditions alternated in blocks (ABBA…) in one process, one figure per block, then the ratio of the
medians of those figures with a 95 % percentile-bootstrap interval (``perf_common.ratio_with_interval``).

Run directly for the figures: ``python tests/benchmarks/overhead.py [--model-dir DIR]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import alternate, bench_exe, cv, ratio_with_interval


def _calls_per_block(call: Any, block_s: float) -> int:
    """How many calls fill ``block_s`` seconds (from a short calibration)."""
    for _ in range(5):
        call()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 0.1:
        call()
        n += 1
    per_call = (time.perf_counter() - t0) / n
    return max(5, int(block_s / per_call))


def harness_overhead(engine: Any, blocks: int = 600, block_s: float = 0.003) -> dict[str, Any]:
    """Wall time per call through bench's timed loop vs a bare ``for: session.run`` loop, same session.

    The harness figure is a block's wall time / calls, so whatever bench adds per call (its clock
    reads, list appends, the call wrapper) is inside it; the bare loop is ``session.run`` and nothing
    else. Also reported: the median bench *reports* (of its per-call samples) against the bare loop.
    """
    from bench.timing import LoopSpec, timed_loop

    batch = engine.random_batch(1, 0)
    call = engine.timed_call(batch, io_binding=False)
    session, names, feed = engine.session, engine.output_names[:1], {engine.input.name: batch}
    k = _calls_per_block(call, block_s)
    reported: list[float] = []

    def harness() -> float:
        t0 = time.perf_counter_ns()
        samples = timed_loop(call, LoopSpec(iterations=k, warmup=0))
        wall = (time.perf_counter_ns() - t0) / 1e6 / k
        reported.append(float(np.median(samples)))
        return wall

    def bare() -> float:
        run = session.run
        t0 = time.perf_counter_ns()
        for _ in range(k):
            run(names, feed)
        return (time.perf_counter_ns() - t0) / 1e6 / k

    h, b = alternate([harness, bare], blocks)
    point, low, high = ratio_with_interval(h, b)
    rp, rl, rh = ratio_with_interval(reported, b)
    return {
        "metric": "harness overhead (bench timed loop / bare session.run loop, wall per call)",
        "ratio": point,
        "ci_low": low,
        "ci_high": high,
        "target": 1.03,
        "reported_median_ratio": rp,
        "reported_ci": [rl, rh],
        "bare_ms": float(np.median(b)),
        "harness_ms": float(np.median(h)),
        "blocks": blocks,
        "calls_per_block": k,
    }


def sampler_overhead(engine: Any, blocks: int = 20, block_s: float = 0.4, hz: float = 10.0) -> dict[str, Any]:
    """Median per-call latency from the timed loop with ResourceSampler at ``hz`` vs off, alternated.

    Blocks last ``block_s`` so the sampler really ticks in each (4 samples at 10 Hz); per block the
    median of the timed samples (the figure bench reports) and the wall time per call.
    """
    from bench.sampling import ResourceSampler
    from bench.timing import LoopSpec, timed_loop

    call = engine.timed_call(engine.random_batch(1, 0), io_binding=False)
    k = _calls_per_block(call, block_s)
    walls: dict[str, list[float]] = {"on": [], "off": []}
    ticks: list[int] = []

    def measure(on: bool) -> float:
        t0 = time.perf_counter_ns()
        if on:
            with ResourceSampler(hz=hz, gpu_index=None) as sampler:
                samples = timed_loop(call, LoopSpec(iterations=k, warmup=0))
            ticks.append(sampler.stats().samples)
        else:
            samples = timed_loop(call, LoopSpec(iterations=k, warmup=0))
        walls["on" if on else "off"].append((time.perf_counter_ns() - t0) / 1e6 / k)
        return float(np.median(samples))

    on, off = alternate([lambda: measure(True), lambda: measure(False)], blocks)
    point, low, high = ratio_with_interval(on, off)
    wp, wl, wh = ratio_with_interval(walls["on"], walls["off"])
    return {
        "metric": f"sampler overhead (timed loop median, sampler at {hz:g} Hz / off)",
        "ratio": point,
        "ci_low": low,
        "ci_high": high,
        "target": 1.01,
        "wall_ratio": wp,
        "wall_ci": [wl, wh],
        "sampler_ticks_per_block": float(np.median(ticks)),
        "off_ms": float(np.median(off)),
        "blocks": blocks,
        "calls_per_block": k,
    }


def help_startup(runs: int = 10) -> dict[str, Any]:
    """Wall time of ``bench --help`` (a fresh interpreter each time), after one untimed run.

    With bytecode caching on, as a user's Python has it: under PYTHONDONTWRITEBYTECODE=1 (set in some
    sandboxes and containers) every start compiles bench's ~80 modules again, measured +0.1 s here.
    """
    exe = bench_exe()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([exe, "--help"], check=True, capture_output=True, env=env)  # writes the .pyc files
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([exe, "--help"], check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return {
        "metric": "bench --help start-up (s)",
        "median_s": float(np.median(times)),
        "min_s": min(times),
        "max_s": max(times),
        "runs": runs,
        "target_s": 0.3,
    }


def run_to_run_cv(model_dir: Path, runs: int = 5, iterations: int = 200, threads: int | None = None) -> dict[str, Any]:
    """Spread of p50 over ``runs`` separate ``bench run`` processes on CPU (coefficient of variation)."""
    p50s = []
    extra = ["--threads", str(threads)] if threads else []
    for _ in range(runs):
        out = subprocess.run(
            [
                bench_exe(),
                "run",
                "--model-dir",
                str(model_dir),
                "--iterations",
                str(iterations),
                "--warmup",
                "20",
                *extra,
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        p50s.append(json.loads(out.stdout)["cells"][0]["latency_ms"]["p50"])
    how = f"--threads {threads}" if threads else "ORT's default threads"
    return {
        "metric": f"run-to-run CV of p50 over {runs} bench runs (cpu, {iterations} iterations, {how})",
        "cv": cv(p50s),
        "p50_ms": p50s,
        "max_over_min": max(p50s) / min(p50s),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    from perf_common import demo_or_standin

    from bench.bundle import Bundle
    from bench.engine import Engine, SessionSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, why = (args.model_dir, "given") if args.model_dir else demo_or_standin(Path(tmp))
        print(f"model: {model_dir} ({why})")
        engine = Engine(Bundle.discover(model_dir).variants["fp32"], "cpu", SessionSpec(threads=1))
        for figure in (
            harness_overhead(engine),
            sampler_overhead(engine),
            help_startup(),
            run_to_run_cv(model_dir),
            run_to_run_cv(model_dir, threads=1),
        ):
            print(format_figure(figure))
    return 0


def format_figure(f: dict[str, Any]) -> str:
    if "ratio" in f:
        extra = ""
        if "reported_median_ratio" in f:
            extra = (
                f"; bare loop {f['bare_ms']:.4f} ms/call (block wall / calls); bench's reported p50 / that "
                f"×{f['reported_median_ratio']:.4f} [{f['reported_ci'][0]:.4f}, {f['reported_ci'][1]:.4f}], "
                "below 1 by the tail that a mean per call includes and a median does not"
            )
        if "wall_ratio" in f:
            extra = (
                f"; wall per call ×{f['wall_ratio']:.4f} [{f['wall_ci'][0]:.4f}, {f['wall_ci'][1]:.4f}]; "
                f"{f['sampler_ticks_per_block']:.0f} sampler ticks per block; off {f['off_ms']:.4f} ms"
            )
        return (
            f"{f['metric']}: ×{f['ratio']:.4f} [95% {f['ci_low']:.4f}, {f['ci_high']:.4f}] "
            f"(target ≤ {f['target']}; {f['blocks']} blocks × {f['calls_per_block']} calls{extra})"
        )
    if "median_s" in f:
        return (
            f"{f['metric']}: median {f['median_s']:.3f} s, min {f['min_s']:.3f}, max {f['max_s']:.3f} "
            f"over {f['runs']} runs (target < {f['target_s']} s)"
        )
    p50s = [round(x, 4) for x in f["p50_ms"]]
    return f"{f['metric']}: CV {f['cv']:.2%}; p50s {p50s} ms; max/min ×{f['max_over_min']:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
