"""The targets of "Where the time goes" (issue 26), measured; raw figures to --record, a table on stdout.

    python tests/benchmarks/profile_targets.py --record /tmp/profile-targets.json           # about 1–2 min
    python tests/benchmarks/profile_targets.py --vit DIR        # a ViT-base bundle already exported (else built)
    python tests/benchmarks/profile_targets.py --no-vit         # skip the ViT-base export and profile

1. A conv net of known cost (tests/profile/convnet.py, analytic FLOPs counted by hand): bench's
   ``total_flops`` within ±2 % of the analytic count, and Conv ≥ 70 % of op time.
2. Its twin with about +28 % FLOPs (channels 48/80 instead of 32/64 in the first two convs): per op-type
   deltas explain 85–115 % of the timed end-to-end delta, Conv first; ``--repeats`` times.
3. Profiling beside a timed cell leaves the cell's p50 unchanged (±1 %): ``--rounds`` interleaved rounds, each
   [time the cell] and [profile, then time the cell], in alternating order; B/A ratio of p50 with the two-level
   bootstrap interval over rounds (bench.stats.ratio_interval).
4. ViT-base fp32 (random weights, exported here with torch + transformers via variants/vitbase_check.py, or
   --vit DIR): fraction of peak from ``bench profile``, and GFLOP/s of a bare ``InferenceSession`` loop.
One intra-op thread throughout (``--threads``): on a shared 2-core machine two threads wait for each other's
core. The load average is recorded before and after each part; figures from a busy machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "profile"))
sys.path.insert(0, str(ROOT / "variants"))

from convnet import analytic_flops, make_convnet  # noqa: E402

from bench.engine import Engine  # noqa: E402
from bench.options import LoopSpec, SessionSpec  # noqa: E402
from bench.profile.explain import profile_against  # noqa: E402
from bench.profile.peak import machine_peak  # noqa: E402
from bench.profile.profiler import profile_model  # noqa: E402
from bench.stats import ratio_interval  # noqa: E402
from bench.timing import timed_loop  # noqa: E402

BASE, TWIN = (32, 64, 64, 64), (48, 80, 64, 64)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def known_cost(work: Path, spec: SessionSpec, batch: int) -> dict[str, Any]:
    path = make_convnet(work / "convnet.onnx")
    before = load()
    data = profile_model(path, "cpu", spec, batch, runs=30).as_dict()
    expected = analytic_flops(batch, 64, BASE)
    conv = next(r for r in data["op_types"] if r["op_type"] == "Conv")
    return {
        "batch_size": batch,
        "analytic_flops": expected,
        "total_flops": data["total_flops"],
        "flops_error": (data["total_flops"] - expected) / expected,
        "conv_share": conv["share"],
        "op_types": data["op_types"],
        "pass_flops": abs(data["total_flops"] - expected) <= 0.02 * expected,
        "pass_conv_share": conv["share"] >= 0.70,
        "loadavg": [before, load()],
    }


def twin(work: Path, spec: SessionSpec, batch: int, repeats: int) -> list[dict[str, Any]]:
    a, b = make_convnet(work / "a.onnx", channels=BASE), make_convnet(work / "b.onnx", channels=TWIN)
    rows = []
    for i in range(repeats):
        before = load()
        _, _, e = profile_against(a, b, "cpu", spec, batch, runs=30, blocks=20)
        first = e["op_types"][0]
        rows.append(
            {
                "repeat": i,
                "analytic_ratio": analytic_flops(batch, 64, TWIN) / analytic_flops(batch, 64, BASE),
                **{k: e[k] for k in ("a_p50_ms", "b_p50_ms", "e2e_delta_ms", "ratio", "ratio_ci", "op_delta_ms")},
                "profiler_overhead_removed_ms": e["profiler_overhead_removed_ms"],
                "explained": e["explained"],
                "explained_point": e["explained_point"],
                "explained_why": e["explained_why"],
                "first_op_type": first["op_type"],
                "op_types": e["op_types"],
                "pass": e["explained"] is not None and 0.85 <= e["explained"] <= 1.15 and first["op_type"] == "Conv",
                "loadavg": [before, load()],
            }
        )
        print(f"twin {i}: explained {e['explained']} ({e['explained_why'] or 'decided'}), first {first['op_type']}")
    return rows


def beside(work: Path, spec: SessionSpec, batch: int, rounds: int, calls: int) -> dict[str, Any]:
    path = make_convnet(work / "cell.onnx")
    plain: list[list[float]] = []
    profiled: list[list[float]] = []
    before = load()

    def cell() -> list[float]:
        engine = Engine(path, "cpu", spec)
        samples = timed_loop(engine.timed_call(engine.random_batch(batch)), LoopSpec(iterations=calls, warmup=5))
        del engine
        return samples

    for r in range(rounds):
        for with_profile in (False, True) if r % 2 == 0 else (True, False):
            if with_profile:
                profile_model(path, "cpu", spec, batch, runs=10)
                profiled.append(cell())
            else:
                plain.append(cell())
    import numpy as np

    est = ratio_interval([np.asarray(s) for s in profiled], [np.asarray(s) for s in plain], unit="rounds")
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        "plain_p50_ms": statistics.median(x for s in plain for x in s),
        "profiled_p50_ms": statistics.median(x for s in profiled for x in s),
        "ratio": est.point,
        "ratio_ci": [est.low, est.high],
        "pass": est.point is not None and abs(est.point - 1) <= 0.01,
        "interval_inside_1pct": est.low is not None and est.low >= 0.99 and est.high <= 1.01,
        "loadavg": [before, load()],
    }


def vit(work: Path, given: Path | None, spec: SessionSpec) -> dict[str, Any]:
    started = time.perf_counter()
    if given is None:
        from vitbase_check import export

        export(work / "vit")
        model = work / "vit" / "onnx" / "model.onnx"
    else:
        model = given / "onnx" / "model.onnx" if (given / "onnx").is_dir() else given
    export_s = time.perf_counter() - started
    before = load()
    peak = machine_peak("cpu", spec.threads)
    data = profile_model(model, "cpu", spec, 1, runs=10, peak=dict(peak)).as_dict()
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if spec.threads:
        opts.intra_op_num_threads = spec.threads
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)}
    for _ in range(3):
        session.run(None, x)
    bare = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        session.run(None, x)
        bare.append((time.perf_counter_ns() - t0) / 1e6)
    bare_p50 = statistics.median(bare)
    return {
        "model": str(model),
        "export_s": round(export_s, 1),
        "total_flops": data["total_flops"],
        "static_flops": data["static_flops"],
        "timed_p50_ms": data["timed_p50_ms"],
        "achieved_gflops": data["achieved_gflops"],
        "peak_gflops": data["peak_gflops"],
        "fraction_of_peak": data["fraction_of_peak"],
        "bare_ort_p50_ms": round(bare_p50, 3),
        "bare_ort_gflops": round(data["total_flops"] / (bare_p50 * 1e6), 2),
        "bare_ort_fraction_of_peak": round(data["total_flops"] / (bare_p50 * 1e6) / data["peak_gflops"], 4),
        "op_types": data["op_types"][:8],
        "loadavg": [before, load()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--record", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="twin comparisons")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the beside-a-cell check")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per round")
    parser.add_argument("--vit", type=Path, default=None, help="a ViT-base bundle (else exported here)")
    parser.add_argument("--no-vit", action="store_true")
    args = parser.parse_args()
    spec = SessionSpec(threads=args.threads or None)
    out: dict[str, Any] = {"threads": args.threads, "cpus": os.cpu_count(), "started_loadavg": load()}
    with tempfile.TemporaryDirectory(prefix="bench-profile-targets-") as tmp:
        work = Path(tmp)
        out["known_cost"] = known_cost(work, spec, args.batch_size)
        known = out["known_cost"]
        print(f"known cost: flops error {known['flops_error']:+.4%}, Conv {known['conv_share']:.1%}")
        out["twin"] = twin(work, spec, args.batch_size, args.repeats)
        out["beside"] = beside(work, spec, args.batch_size, args.rounds, args.calls)
        print(f"beside: ratio {out['beside']['ratio']:.4f} {out['beside']['ratio_ci']}")
        if args.no_vit:
            out["vit"] = {"skipped": "--no-vit"}
        else:
            try:
                out["vit"] = vit(work, args.vit, spec)
                v = out["vit"]
                print(
                    f"vit: {v['fraction_of_peak']:.1%} of peak (bench), bare ORT {v['bare_ort_fraction_of_peak']:.1%}"
                )
            except ImportError as exc:
                out["vit"] = {"skipped": f"no ViT-base here and torch/transformers missing to export one: {exc}"}
    out["finished_loadavg"] = load()
    text = json.dumps(out, indent=2)
    if args.record:
        args.record.write_text(text + "\n", encoding="utf-8")
    summary = {
        "flops_within_2pct": out["known_cost"]["pass_flops"],
        "conv_share_ge_70pct": out["known_cost"]["pass_conv_share"],
        "twin_explained_85_115": [r["pass"] for r in out["twin"]],
        "beside_p50_within_1pct": out["beside"]["pass"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
