"""Issue 27's targets, counted: coverage of the TPR@FPR and Brier intervals, the shortcut audit, the sweep's time.

    python tests/benchmarks/detector_targets.py coverage --datasets 400 --workers 2   # TPR@FPR, Brier
    python tests/benchmarks/detector_targets.py audit        # planted shortcut vs the demo set
    python tests/benchmarks/detector_targets.py sweep        # bench eval --perturb standard, the 7 ONNX variants
    python tests/benchmarks/detector_targets.py all --out /tmp/detector.json         # the three, one JSON

coverage: each data set has n images, label fake with probability 1/2, a latent z ~ N(±μ, 1) (μ = 1.2816, as
tests/benchmarks/coverage.py) and p(fake) = logistic(z). The truth is closed form: TPR at FPR α is
1 − Φ(Φ⁻¹(1 − α) − 2μ) (binormal), the Brier score E[(logistic(z) − y)²] by quadrature. The intervals are the ones
``bench eval`` writes (bench.metrics.detector_metrics, stratified by class: Brier by expanded BCa, TPR at FPR α by
expanded percentile and only where n_real · α ≥ 5, else "none"). A miss is counted by side. Target: 0.93–0.97.

audit: ``bench audit`` (bench.audit.audit_dataset) on a planted shortcut (real images PNG at 64 px, fake images JPEG
at 80 px, the pixels drawn from one distribution: only format and size tell them apart; target metadata_auc ≥ 0.95)
and on the bundled demo set (target ≤ 0.65).

sweep: wall time (and CPU time) of ``bench eval --perturb standard`` on the demo with its 7 ONNX variants (the
threshold transfer, the flips at batch 1 and 16 and the audit included, as by default), with /proc/loadavg before
and after (target ≤ 2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import integrate
from scipy.special import expit, ndtr, ndtri

from bench.metrics import N_BOOT, TARGET_FPRS, detector_metrics

ROOT = Path(__file__).resolve().parents[2]
MU = 1.2816
SIZES = (1000, 3000)
ONNX_VARIANTS = ("fp32", "fp16", "int8", "uint8", "q4", "q4f16", "bnb4")  # the demo's 7 ONNX variants


def truth() -> dict[str, float]:
    """TPR at each target FPR and the Brier score of the population (closed form / quadrature)."""
    out = {f"tpr_at_fpr:{a:g}": float(1.0 - ndtr(ndtri(1.0 - a) - 2 * MU)) for a in TARGET_FPRS}

    def loss(z: float, sign: float) -> float:
        y = 1.0 if sign > 0 else 0.0
        return float((expit(z) - y) ** 2 * math.exp(-((z - sign * MU) ** 2) / 2) / math.sqrt(2 * math.pi))

    fake = integrate.quad(loss, -12, 12, args=(1.0,))[0]
    real = integrate.quad(loss, -12, 12, args=(-1.0,))[0]
    out["brier"] = (fake + real) / 2
    return out


def judge(n: int, seed: int, n_boot: int) -> dict[str, str]:
    """One data set: per figure "hit", "below" (the truth under the interval), "above" or "none" (no interval)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int64)
    z = rng.normal(np.where(y == 1, MU, -MU), 1.0)
    found, _ = detector_metrics(y, expit(z), n_boot=n_boot, seed=seed)
    intervals = {"brier": found["brier_ci"]}
    for key, point in (found["tpr_at_fpr"] or {}).items():
        intervals[f"tpr_at_fpr:{key}"] = None if point is None else point["tpr_ci"]
    out = {}
    for name, value in truth().items():
        ci = intervals.get(name)
        out[name] = "none" if ci is None else "below" if value < ci[0] else "above" if value > ci[1] else "hit"
    return out


def _job(args: tuple[int, int, int]) -> tuple[int, dict[str, str]]:
    n, seed, n_boot = args
    return n, judge(n, seed, n_boot)


def coverage(datasets: int, sizes: list[int], n_boot: int, workers: int, seed: int) -> dict[str, Any]:
    jobs = [(n, seed + i, n_boot) for n in sizes for i in range(datasets)]
    t0 = time.time()
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            results = pool.map(_job, jobs)
    else:
        results = [_job(j) for j in jobs]
    table: dict[str, dict[str, dict[str, int]]] = {}
    for n, judged in results:
        for name, outcome in judged.items():
            row = table.setdefault(str(n), {}).setdefault(name, {"hit": 0, "below": 0, "above": 0, "none": 0})
            row[outcome] += 1
    for rows in table.values():
        for row in rows.values():
            judged_n = row["hit"] + row["below"] + row["above"]
            row["coverage"] = round(row["hit"] / judged_n, 4) if judged_n else None  # type: ignore[assignment]
    return {"truth": truth(), "datasets": datasets, "n_boot": n_boot, "wall_s": round(time.time() - t0, 1), **table}


def audit_targets() -> dict[str, Any]:
    from PIL import Image

    from bench.audit import audit_dataset
    from bench.datasets import load_labelled_set

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for cls, fmt, side in (("real", "PNG", 64), ("fake", "JPEG", 80)):
            (root / cls).mkdir()
            for i in range(150):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / cls / f"{i:03d}.{fmt.lower()}", format=fmt)
        planted = audit_dataset(load_labelled_set(root))
    demo = audit_dataset(load_labelled_set(ROOT / "datasets" / "demo"))
    return {
        "planted": {k: planted[k] for k in ("n", "metadata_auc", "metadata_auc_ci", "verdict")},
        "demo": {k: demo[k] for k in ("n", "metadata_auc", "metadata_auc_ci", "verdict")},
        "planted_flagged": planted["metadata_auc"] >= 0.95,
        "demo_not_flagged": demo["metadata_auc"] <= 0.65,
    }


def sweep() -> dict[str, Any]:
    import resource

    bench = Path(sys.executable).with_name("bench")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = subprocess.run(
            [str(bench), "eval", "--variant", ",".join(ONNX_VARIANTS), "--perturb", "standard", "--out", tmp, "--json"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - t0
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cells = json.loads(run.stdout)["cells"] if run.returncode == 0 else []
    return {
        "command": f"bench eval --variant {','.join(ONNX_VARIANTS)} --perturb standard",
        "rc": run.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(
            (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime), 1
        ),  # user + system time of bench and its children: what the sweep costs, less sensitive to neighbours
        "variants": sorted({c["variant"] for c in cells}),
        "perturbations": len((cells[0].get("accuracy") or {}).get("perturbations") or []) if cells else 0,
        "loadavg_before": load_before,
        "loadavg_after": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None,
        "cpus": os.cpu_count(),
        "stderr_tail": run.stderr[-400:] if run.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("coverage", "audit", "sweep", "all"))
    parser.add_argument("--datasets", type=int, default=400, help="data sets per size (coverage)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="images per data set (coverage)")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    found: dict[str, Any] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    if args.what in ("coverage", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]
        found["coverage"] = coverage(args.datasets, sizes, args.n_boot, args.workers, args.seed)
    if args.what in ("audit", "all"):
        found["audit"] = audit_targets()
    if args.what in ("sweep", "all"):
        found["sweep"] = sweep()
    text = json.dumps(found, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
