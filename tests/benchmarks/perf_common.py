"""Shared by the perf suite and its scripts: which model to measure, a real image, statistics helpers."""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "variants" / "demo"
DEMO_DATASET = REPO / "datasets" / "demo"


def demo_is_trained() -> bool:
    """The trained demo bundle has landed (its helper writes TRAINING.md next to config.json)."""
    return (DEMO / "TRAINING.md").is_file() and (DEMO / "onnx" / "model.onnx").is_file()


def demo_or_standin(tmp: Path) -> tuple[Path, str]:
    """``variants/demo`` when trained, else a 224 px stand-in built with tests/models.py."""
    if demo_is_trained():
        return DEMO, "the trained demo bundle"
    sys.path.insert(0, str(REPO / "tests"))
    from models import make_bundle

    return make_bundle(tmp / "standin", size=224, hidden=64), "stand-in: variants/demo/TRAINING.md not found"


def sample_image(tmp: Path) -> Path:
    """The first demo image when the demo set exists, else a generated 256×256 JPEG."""
    if DEMO_DATASET.is_dir():
        from bench.datasets import image_files

        found = image_files(DEMO_DATASET)
        if found:
            return found[0]
    import numpy as np
    from PIL import Image

    path = tmp / "sample.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def copy_bundle(src: Path, dst: Path) -> Path:
    """A copy of a model folder (fp32 only: built variants are not needed for the A/B checks)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model_*.onnx", "model_*.json"))
    return dst


def alternate(funcs: Sequence[Callable[[], Any]], blocks: int) -> list[list[Any]]:
    """Call each function once per block, order ABBA… so drift falls on both; results per function."""
    out: list[list[Any]] = [[] for _ in funcs]
    for b in range(blocks):
        order = range(len(funcs)) if b % 2 == 0 else reversed(range(len(funcs)))
        for i in order:
            out[i].append(funcs[i]())
    return out


def ratio_with_interval(
    current: Sequence[float],
    baseline: Sequence[float],
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) of median(current) / median(baseline) with a 95 % percentile-bootstrap interval.

    One level, each side's figures (one per block of an ABBA… alternation) resampled as a whole: what
    ``bench.timing.bootstrap_ratio`` did before it was removed. ``bench.stats.ratio_interval`` is not the
    same: it resamples replicates of many calls, widens few of them and gives no interval under 20 figures.
    """
    import numpy as np

    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap needs samples on both sides")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = rng.integers(0, b.size, size=(n_boot, b.size))
    ratios = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return float(np.median(a) / np.median(b)), float(low), float(high)


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation (sample std / mean)."""
    return statistics.stdev(values) / statistics.fmean(values)


def bench_exe() -> str:
    """The ``bench`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / "bench"
    return str(exe) if exe.exists() else shutil.which("bench") or "bench"


def busy_loop(stop: Any) -> None:
    """A CPU hog: one process busy-looping until ``stop`` (a multiprocessing.Event) is set, one core taken."""
    while not stop.is_set():
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def cpu_hog(on: bool = True) -> Iterator[None]:
    """One busy-looping process beside whatever runs inside (nothing when ``on`` is False)."""
    if not on:
        yield
        return
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=busy_loop, args=(stop,), daemon=True)
    hog.start()
    try:
        yield
    finally:
        stop.set()
        hog.join(timeout=5)


def bench_json(*args: str | Path, timeout: float = 900) -> tuple[int, dict | None, str]:
    """The real CLI in a fresh process (``python -m bench ARGS``): exit code, its JSON stdout parsed, stderr's tail."""
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return proc.returncode, doc, proc.stderr[-400:]
