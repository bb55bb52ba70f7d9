"""Results files for the history tests, written by bench's own RunResult (real raw samples and replicates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.results import CellResult, RunResult


def make_run(
    run_id: str, created: str, p50: float = 2.0, variants: tuple[str, ...] = ("fp32", "int8"), seed: int = 0
) -> RunResult:
    """A RunResult with real raw samples (5 replicates × 20 calls around ``p50`` ms) for each variant on cpu."""
    rng = np.random.default_rng(seed)
    cells = []
    for k, variant in enumerate(variants):
        level = p50 * (1 + k)
        samples = [round(float(v), 5) for v in level * np.exp(rng.normal(0, 0.02, 100))]
        reps = [i // 20 for i in range(100)]
        q = np.quantile(samples, [0.5, 0.9, 0.95, 0.99])
        cells.append(
            CellResult(
                variant=variant,
                provider="cpu",
                batch_size=1,
                samples_ms=samples,
                sample_replicates=reps,
                latency_ms={
                    "n": 100,
                    "mean": float(np.mean(samples)),
                    "p50": float(q[0]),
                    "p90": float(q[1]),
                    "p95": float(q[2]),
                    "p99": float(q[3]),
                },
                throughput_ips=1000.0 / float(q[0]),
                memory={"rss_peak_mb": 80.0 + k},
                replicates={
                    "count": 5,
                    "isolation": "session",
                    "p50_ms": [float(np.median(samples[i * 20 : i * 20 + 20])) for i in range(5)],
                },
            )
        )
    env = {"cpu": {"model": "Test CPU", "cores_logical": 2}, "platform": {"machine": "x86_64"}, "machine_id": "m-test"}
    return RunResult(environment=env, config={"command": "run"}, cells=cells, run_id=run_id, created=created)  # type: ignore[arg-type]


def write_runs(folder: Path, levels: list[float], prefix: str = "r") -> list[Path]:
    """One results folder per level, created a minute apart, in order."""
    paths = []
    for i, level in enumerate(levels):
        run = make_run(f"{prefix}{i:04d}", f"2026-11-01T{i // 60:02d}:{i % 60:02d}:00+00:00", p50=level, seed=i)
        out = folder / f"{prefix}{i:04d}"
        run.write(out)
        paths.append(out)
    return paths
