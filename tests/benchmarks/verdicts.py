"""Do the verdicts hold under noise? A/A and A/B counts for `bench ab` and `bench compare`, quiet and with a CPU hog.

    python tests/benchmarks/verdicts.py --runs 20 --out reports/verdicts          # everything (~30 min, 2 cores)
    python tests/benchmarks/verdicts.py --runs 5 --models us --conditions quiet   # a quick look

Models (ONNX, built here with onnx.helper; the A/B "slower" twins have the same inputs and outputs and
more compute in the middle):
- ``us``: a ~10 µs MLP (64 → 64 → 2), its slower twins have more hidden layers;
- ``demo``: the bundled demo detector (~0.5 ms), A/A only;
- ``conv``: a few-ms conv net (3×64×64 → convs → 2), its slower twins have more conv layers.

Conditions: ``quiet`` (nothing else running) and ``hog`` (one busy-looping process beside bench: one of
the two cores taken). Every run is the real CLI in a fresh process, with its defaults (plus the flags
shown), and the result JSON is read back: a verdict counts as false when A/A says regression or
improvement, as missed when a slower twin is not called a regression. Writes counts.json and prints a
table of raw counts; exit 0 always (the targets are judged by reading the table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import bench_json, cpu_hog

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "variants" / "demo"


def _save_bundle(model: onnx.ModelProto, folder: Path) -> Path:
    """A model folder bench understands: config.json with two labels and onnx/model.onnx."""
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "real", "1": "fake"}}), encoding="utf-8")
    onnx.save(model, str(folder / "onnx" / "model.onnx"))
    return folder


def mlp(hidden_layers: int, width: int = 64, seed: int = 0) -> onnx.ModelProto:  # width = 1 × 8 × 8
    """input [N, 1, 8, 8] (image-shaped, as bench expects) → flatten → hidden_layers × (MatMul, Relu) → [N, 2]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "flat_shape")]
    nodes, prev = [helper.make_node("Reshape", ["pixel_values", "flat_shape"], ["flat"])], "flat"
    for i in range(hidden_layers):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    inits.append(numpy_helper.from_array(rng.standard_normal((width, 2)).astype(np.float32), "wout"))
    nodes.append(helper.make_node("MatMul", [prev, "wout"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def convnet(conv_layers: int, channels: int = 32, size: int = 64, seed: int = 0) -> onnx.ModelProto:
    """input [N, 3, size, size] → conv 3→C → conv_layers × conv C→C (3×3, pad 1) → GAP → MatMul → [N, 2]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(i: int, cin: int, src: str) -> str:
        w = (rng.standard_normal((channels, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"c{i}"))
        nodes.append(helper.make_node("Conv", [src, f"c{i}"], [f"o{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"o{i}"], [f"a{i}"]))
        return f"a{i}"

    prev = conv(0, 3, "pixel_values")
    for i in range(1, conv_layers + 1):
        prev = conv(i, channels, prev)
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((channels, 2)).astype(np.float32), "wout"))
    nodes.append(helper.make_node("MatMul", ["flat", "wout"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


# Base size and the slower twins' sizes: compute grows with layers, and +25 % / +12 % were checked by
# timing each twin against its base in this script's --calibrate-twins mode (see the printed ratios).
MODELS = {
    "us": {"base": lambda: mlp(8), "+25%": lambda: mlp(10), "+12%": lambda: mlp(9)},
    "conv": {"base": lambda: convnet(8), "+25%": lambda: convnet(10), "+12%": lambda: convnet(9)},
}


def build(out: Path) -> dict[str, dict[str, Path]]:
    bundles: dict[str, dict[str, Path]] = {"demo": {"base": DEMO}}
    for name, twins in MODELS.items():
        bundles[name] = {kind: _save_bundle(make(), out / "models" / f"{name}-{kind}") for kind, make in twins.items()}
    return bundles


def p50_verdict(doc: dict | None) -> str:
    if doc is None:
        return "error"
    row = next((r for r in doc["rows"] if r["metric"] == "latency_p50_ms"), None)
    return row["verdict"] if row else "error"


def p95_verdict(doc: dict | None) -> str:
    if doc is None:
        return "error"
    row = next((r for r in doc["rows"] if r["metric"] == "latency_p95_ms"), None)
    return row["verdict"] if row else "error"


def ab_runs(base: Path, cand: Path, runs: int, tolerance: str, extra: list[str]) -> dict:
    counts: Counter[str] = Counter()
    tails: Counter[str] = Counter()
    walls, ratios = [], []
    for i in range(runs):
        t0 = time.monotonic()
        rc, doc, err = bench_json(
            "ab",
            "--model-dir",
            cand,
            "--against",
            base,
            "--json",
            "--no-memory",
            "--latency-tolerance",
            tolerance,
            "--seed",
            str(i),
            "--fixed",  # this script measures the fixed design (sequential_ab.py the sequential one, the default)
            *extra,
        )
        walls.append(time.monotonic() - t0)
        counts[p50_verdict(doc)] += 1
        tails[p95_verdict(doc)] += 1
        if doc is not None:
            row = next(r for r in doc["rows"] if r["metric"] == "latency_p50_ms")
            ratios.append(row.get("ratio"))
        elif err:
            print("   error:", err.strip().splitlines()[-1] if err.strip() else rc, file=sys.stderr)
    return {
        "p50": dict(counts),
        "p95": dict(tails),
        "wall_s_median": round(float(np.median(walls)), 2),
        "ratios": ratios,
    }


def compare_runs_separately(base: Path, runs: int, tolerance: str, workdir: Path, extra: list[str]) -> dict:
    """A/A of separate `bench run` processes, compared pairwise in sequence: plain, and with a calibration made
    on this machine first (the README's cross-run recipe: `bench calibrate --out DIR`, then `bench compare`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    rc, _doc, err = bench_json("calibrate", "--model-dir", base, "--runs", "6", "--out", workdir, "--json", *extra)
    calibration = workdir / "calibration.json"
    if rc != 0:
        print("   calibrate failed:", err.strip().splitlines()[-1] if err.strip() else rc, file=sys.stderr)
    plain: Counter[str] = Counter()
    calibrated: Counter[str] = Counter()
    tails: Counter[str] = Counter()
    files = []
    for i in range(runs + 1):
        out = workdir / f"run{i}"
        rc, _doc, _err = bench_json("run", "--model-dir", base, "--out", out, "--seed", str(i), "--json", *extra)
        if rc == 0:
            files.append(out / "results.json")
    for a, b in itertools.pairwise(files):
        _rc, doc, _ = bench_json("compare", a, b, "--json", "--latency-tolerance", tolerance)
        plain[p50_verdict(doc)] += 1
        if calibration.is_file():
            _rc, doc, _ = bench_json(
                "compare", a, b, "--json", "--latency-tolerance", tolerance, "--calibration", calibration
            )
            calibrated[p50_verdict(doc)] += 1
            tails[p95_verdict(doc)] += 1
    sigma = json.loads(calibration.read_text())["cross_run"]["sigma_run"] if calibration.is_file() else None
    return {"p50": dict(plain), "p50_calibrated": dict(calibrated), "p95_calibrated": dict(tails), "sigma_run": sigma}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--models", default="us,demo,conv")
    ap.add_argument("--conditions", default="quiet,hog")
    ap.add_argument("--checks", default="aa,ab25,ab12,compare")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "verdicts")
    ap.add_argument("--ab-arg", action="append", default=[], help="extra argument for bench ab (repeatable)")
    ap.add_argument("--run-arg", action="append", default=[], help="extra argument for bench run (repeatable)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundles = build(args.out)
    results: dict = {"machine": {"cpus": os.cpu_count()}, "runs": args.runs, "cells": []}
    for condition in args.conditions.split(","):
        with cpu_hog(condition == "hog"):
            for model in args.models.split(","):
                base = bundles[model]["base"]
                plan = []
                if "aa" in args.checks:
                    plan.append(("A/A ab", base, "10%"))
                if model in MODELS and "ab25" in args.checks:
                    plan.append(("A/B +25% ab", bundles[model]["+25%"], "10%"))
                if model in MODELS and "ab12" in args.checks:
                    plan.append(("A/B +12% ab", bundles[model]["+12%"], "5%"))
                for check, cand, tol in plan:
                    t0 = time.monotonic()
                    got = ab_runs(base, cand, args.runs, tol, args.ab_arg)
                    row = {"condition": condition, "model": model, "check": check, "tolerance": tol, **got}
                    results["cells"].append(row)
                    print(
                        f"{condition:5} {model:5} {check:12} tol {tol:4} p50 {got['p50']} p95 {got['p95']} "
                        f"(median wall {got['wall_s_median']} s; {time.monotonic() - t0:.0f} s)",
                        flush=True,
                    )
                if "compare" in args.checks:
                    got = compare_runs_separately(
                        base, args.runs, "10%", args.out / f"{condition}-{model}", args.run_arg
                    )
                    results["cells"].append({"condition": condition, "model": model, "check": "A/A compare", **got})
                    print(
                        f"{condition:5} {model:5} A/A compare  p50 {got['p50']} · with calibration (σ_run "
                        f"{got['sigma_run']}) p50 {got['p50_calibrated']} p95 {got['p95_calibrated']}",
                        flush=True,
                    )
    (args.out / "counts.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'counts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
