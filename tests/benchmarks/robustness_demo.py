"""Is a perturbed evaluation fast enough to use? The standard set on the demo, every ONNX variant, timed.

    python tests/benchmarks/robustness_demo.py [--perturb standard] [--limit-s 120] [--out FILE.json]

Runs ``bench eval --variant <the ONNX variants> --perturb standard --json`` as a fresh process on the
bundled demo (300 images, 64 px), prints its wall time with the machine's load average, and the
variants × perturbations table (ΔAUC vs the same variant clean / decision flips vs fp32). Exit 1 when the
wall time exceeds ``--limit-s`` (the issue's target: under 2 minutes on the 2-core dev box).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = "fp32,fp16,int8,uint8,q4,q4f16,bnb4"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perturb", default="standard")
    parser.add_argument("--variants", default=VARIANTS)
    parser.add_argument("--limit-s", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    bench = Path(sys.executable).parent / "bench"
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.run(
        [str(bench), "eval", "--variant", args.variants, "--perturb", args.perturb, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return proc.returncode
    doc = json.loads(proc.stdout)
    names = [n for n in doc["config"]["perturbations"] if n != "clean"]
    print(f"wall {wall:.1f} s · load average {load_before[0]:.2f} → {os.getloadavg()[0]:.2f} · {os.cpu_count()} CPUs")
    print("| variant | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for cell in doc["cells"]:
        entries = {e["perturbation"]: e for e in cell["accuracy"].get("perturbations") or []}
        row = []
        for name in names:
            e = entries[name]
            dauc = e["vs_clean"]["delta_roc_auc"]
            flip = (e.get("agreement") or {}).get("flip_rate")
            row.append(
                ("—" if dauc is None else f"{dauc * 100:+.1f}") + " / " + ("—" if flip is None else f"{flip:.1%}")
            )
        print(f"| {cell['variant']} | " + " | ".join(row) + " |")
    if args.out:
        args.out.write_text(json.dumps({"wall_s": wall, "load_average": load_before, "result": doc}), encoding="utf-8")
    return 0 if wall <= args.limit_s else 1


if __name__ == "__main__":
    sys.exit(main())
