"""What measuring with bench costs beside a bare `session.run` loop: wall time and peak RSS of whole processes.

    python tests/benchmarks/measuring_cost.py --model-dir variants/demo --iterations 300 --repeats 3

Three commands, alternated, each in a fresh process timed by GNU time (wall seconds, max RSS of the
process and the children it waited for):
- ``bare``: import onnxruntime, create one session, ``iterations`` timed calls of a random input;
- ``run``: ``bench run`` of the same model and iterations (replicates, sampler, noise probe, results files);
- ``matrix``: a one-cell ``bench matrix`` (fp32 · cpu · batch 1, no dataset, no report plots skipped:
  the report is part of what a matrix run costs).
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
import sys, time, numpy as np, onnxruntime as ort
path, n = sys.argv[1], int(sys.argv[2])
s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
shape = [d if isinstance(d, int) else 1 for d in i.shape]
x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
for _ in range(10):
    s.run(None, {i.name: x})
t = []
for _ in range(n):
    t0 = time.perf_counter_ns(); s.run(None, {i.name: x}); t.append(time.perf_counter_ns() - t0)
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
            "bare": [sys.executable, "-c", BARE, str(model), n],
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
