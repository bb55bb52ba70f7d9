"""This machine's measured GEMM peak (GFLOP/s): the limit a model's achieved GFLOP/s is held against.

A short micro-benchmark (square fp32 MatMul through ONNX Runtime, the library that runs the models, with the
same intra-op threads), measured once per machine id × provider × threads and cached in
``$BENCH_CACHE_DIR/peak.json`` (default ``$XDG_CACHE_HOME/bench`` or ``~/.cache/bench``). A contended machine
measures a lower peak: the record keeps the load average it was taken at, and ``refresh`` re-measures.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from bench.engine import Engine
from bench.environment import fingerprint
from bench.options import SessionSpec

SIZES = (256, 512, 1024)  # square GEMMs: the best of them is the peak (small ones fit the caches, large ones feed)
MIN_SECONDS = 0.25  # timed per size, after 3 warm-up calls


class PeakRecord(TypedDict, total=False):
    gflops: float  # best median over SIZES: 2·n³ FLOPs ÷ the median call time
    by_size: dict[str, float]  # n → GFLOP/s
    dtype: str
    provider: str
    threads: int | None  # intra-op threads (None: ORT's default, all cores)
    machine_id: str
    method: str
    loadavg: list[float] | None  # 1/5/15-min load when measured (a busy machine measures a lower peak)
    measured_at: str
    cached: bool  # read from the cache rather than measured in this call


def cache_path() -> Path:
    base = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bench"
    )
    return Path(base) / "peak.json"


def _key(machine_id: str, provider: str, threads: int | None) -> str:
    return f"{machine_id}/{provider}/threads={threads or 'default'}"


def _matmul_model(path: Path, n: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, n, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, path)


def measure_peak(provider: str = "cpu", threads: int | None = None, sizes: tuple[int, ...] = SIZES) -> PeakRecord:
    """GFLOP/s of square fp32 MatMuls through ORT on ``provider`` (the session is bench's Engine, so a GPU
    provider that falls back raises instead of measuring the CPU under its name)."""
    import numpy as np

    by_size: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"mm{n}.onnx"
            _matmul_model(path, n)
            engine = Engine(path, provider, SessionSpec(threads=threads))
            x = np.random.default_rng(1).standard_normal((1, 1, n, n), dtype=np.float32)
            call = engine.timed_call(x)  # on a GPU: IOBinding, input resident, so no copy is in the figure
            for _ in range(3):
                call()
            samples: list[float] = []
            deadline = time.perf_counter() + MIN_SECONDS
            while len(samples) < 5 or time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                call()
                samples.append((time.perf_counter_ns() - t0) / 1e9)
            by_size[str(n)] = round(2 * n**3 / statistics.median(samples) / 1e9, 2)
            del call, engine
    return {
        "gflops": max(by_size.values()),
        "by_size": by_size,
        "dtype": "float32",
        "provider": provider,
        "threads": threads,
        "method": f"ONNX Runtime MatMul n×n fp32, n in {list(sizes)}, median of ≥{MIN_SECONDS}s per n, best n",
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cached": False,
    }


def machine_peak(
    provider: str = "cpu", threads: int | None = None, refresh: bool = False, machine_id: str | None = None
) -> PeakRecord:
    """The cached peak of this machine for (provider, threads); measured (and cached) on the first call."""
    machine_id = machine_id or str(fingerprint()["machine_id"])
    path = cache_path()
    key = _key(machine_id, provider, threads)
    cache: dict[str, Any] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}  # a damaged cache is re-measured, never trusted
    if not refresh and isinstance(cache.get(key), dict) and "gflops" in cache[key]:
        return {**cache[key], "cached": True}
    record = measure_peak(provider, threads)
    record["machine_id"] = machine_id
    cache[key] = {k: v for k, v in record.items() if k != "cached"}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache costs a re-measure next time, not the profile
    return record
