"""What measuring with bench costs beside a bare `session.run` loop: wall time and peak RSS of whole processes.

    python tests/benchmarks/measuring_cost.py --model-dir variants/demo --iterations 300 --repeats 3

Four commands, alternated, each in a fresh process timed by GNU time (wall seconds, max RSS of the
process and the children it waited for):
- ``bare``: import onnxruntime, create one session, 10 warm-up calls, ``iterations`` timed calls of a random input;
- ``bare-replicated``: the same loop in bench's measurement design: the calls split over 5 fresh sessions,
  one alive at a time, 10 warm-up calls in the first and 2 in each later one. ``matrix`` against it is
  bench's own overhead (processes, hashing, noise probe, sampler, files, report); ``bare-replicated``
  against ``bare`` is what the replicates cost;
- ``run``: ``bench run`` of the same model and iterations (replicates, sampler, noise probe, results files);
- ``matrix``: a one-cell ``bench matrix`` (fp32 · cpu · batch 1, ``--no-accuracy``; report and plots
  are drawn: they are part of what a matrix run costs).
Prints medians and the ratios to ``bare`` (targets of issue 18: matrix wall ≤ 1.15 × bare on a ViT-base
export, peak RSS ≤ bare + 50 MB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BARE = """
import gc, sys, time, numpy as np, onnxruntime as ort
path, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = []
for r in range(reps):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    for _ in range(10 if r == 0 else 2):
        s.run(None, {i.name: x})
    for _ in range(n // reps + (r < n % reps)):
        t0 = time.perf_counter_ns(); s.run(None, {i.name: x}); t.append(time.perf_counter_ns() - t0)
    del s, i
    gc.collect()
"""


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, max RSS MB) of a command, by GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", out.name, *cmd],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall, rss_kb = out.read().split()[-2:]
    return float(wall), float(rss_kb) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("variants/demo"))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = args.model_dir / "onnx" / "model.onnx"
    n = str(args.iterations)
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            "bare": [sys.executable, "-c", BARE, str(model), n, "1"],
            "bare-replicated": [sys.executable, "-c", BARE, str(model), n, "5"],
            "run": [
                sys.executable,
                "-m",
                "bench",
                "run",
                "--model-dir",
                str(args.model_dir),
                "--iterations",
                n,
                "--out",
                f"{tmp}/run",
            ],
            "matrix": [
                sys.executable,
                "-m",
                "bench",
                "matrix",
                "--model-dir",
                str(args.model_dir),
                "--variants",
                "fp32",
                "--providers",
                "cpu",
                "--batch-sizes",
                "1",
                "--iterations",
                n,
                "--no-accuracy",
                "--out",
                f"{tmp}/m",
            ],
        }
        got: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                got[name].append(timed(cmd))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in got.items()}
    bare_wall, bare_rss = med["bare"]
    rows = {
        k: {
            "wall_s": round(w, 2),
            "peak_rss_mb": round(r, 1),
            "wall_ratio": round(w / bare_wall, 3),
            "wall_ratio_to_bare_replicated": round(w / med["bare-replicated"][0], 3),
            "rss_over_bare_mb": round(r - bare_rss, 1),
        }
        for k, (w, r) in med.items()
    }
    print(
        json.dumps(
            {
                "model": str(args.model_dir),
                "iterations": args.iterations,
                "repeats": args.repeats,
                "medians": rows,
                "raw": got,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
