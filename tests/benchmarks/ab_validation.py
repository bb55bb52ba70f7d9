"""Does the regression gate tell noise from a real slowdown? A/A and A/B runs of the real CLI, counted.

    python tests/benchmarks/ab_validation.py [--runs 10] [--model-dir DIR] [--out FILE.json]

- A/A ``ab``: ``bench ab`` of a variant against itself, ``--runs`` times → false regressions at the
  default tolerance (target 0).
- A/A ``compare``: two separate ``bench run`` processes, then ``bench compare``, ``--runs`` times →
  false regressions (cross-process noise; the reason ``bench ab`` is the recommended gate).
- A/B: the model folder copied to ``…/candidate``, slowed by +10 % and +25 % per inference through the
  test-only ``BENCH_FAULTS`` hook matched on that path, ``bench ab --latency-tolerance 5%`` ``--runs``
  times each → detection rate (targets: +25 % every time, +10 % in ≥ 8 of 10), intervals printed.

Every run is a fresh ``bench`` process, as in CI. Uses ``variants/demo`` once the trained demo
bundle is there (TRAINING.md), else the 224 px stand-in of the perf suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf_common import bench_exe, copy_bundle, demo_or_standin


def _bench(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run([bench_exe(), *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"bench {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.returncode, proc.stdout


def _summary(doc: dict[str, Any]) -> dict[str, Any]:
    rows = {r["metric"]: r for r in doc["rows"]}
    out: dict[str, Any] = {"verdict": doc["verdict"]}
    for metric in ("latency_p50_ms", "latency_p95_ms", "rss_peak_mb"):
        r = rows.get(metric)
        if r:
            out[metric] = {k: r[k] for k in ("ratio", "ci_low", "ci_high", "verdict")}
    out["regressions"] = [m for m, r in rows.items() if r["verdict"] == "regression"]
    return out


def _line(tag: str, i: int, s: dict[str, Any]) -> str:
    def fmt(metric: str) -> str:
        r = s.get(metric)
        if not r:
            return f"{metric}: —"
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
        return f"{metric.replace('latency_', '').replace('_ms', '')} ×{r['ratio']:.3f} {ci} {r['verdict']}"

    return f"{tag} #{i + 1:>2}: {s['verdict']:<10} {fmt('latency_p50_ms')}; {fmt('latency_p95_ms')}" + (
        f"; {fmt('rss_peak_mb')}" if "rss_peak_mb" in s else ""
    )


def aa_ab(model: Path, runs: int, extra: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        _, stdout = _bench("ab", "--model-dir", str(model), "--against", str(model), "--json", "--fixed", *extra)
        out.append(_summary(json.loads(stdout)))
        print(_line("A/A ab     ", i, out[-1]), flush=True)
    return out


def aa_compare(model: Path, runs: int, tmp: Path, extra: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        for side in ("a", "b"):
            _bench("run", "--model-dir", str(model), "--out", str(tmp / f"aa{i}{side}"), "--json", *extra)
        _, stdout = _bench("compare", str(tmp / f"aa{i}a"), str(tmp / f"aa{i}b"), "--json")
        out.append(_summary(json.loads(stdout)))
        print(_line("A/A compare", i, out[-1]), flush=True)
    return out


def ab_slowdown(model: Path, candidate: Path, factor: float, runs: int, extra: list[str]) -> list[dict[str, Any]]:
    faults = json.dumps({"slowdown": {"factor": factor, "match": str(candidate)}})
    out = []
    for i in range(runs):
        _, stdout = _bench(
            "ab",
            "--fixed",  # the fixed design's error rates (bench ab is sequential by default)
            "--model-dir",
            str(candidate),
            "--against",
            str(model),
            "--latency-tolerance",
            "5%",
            "--no-memory",
            "--json",
            *extra,
            env={"BENCH_FAULTS": faults},
        )
        out.append(_summary(json.loads(stdout)))
        print(_line(f"A/B +{factor:.0%}   ", i, out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="A/A and A/B validation of bench ab / bench compare")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--model-dir", type=Path, default=None, help="default: variants/demo when trained, else a stand-in")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: aa_ab, aa_compare, ab")
    ap.add_argument("bench_args", nargs="*", help="extra flags for every bench run/ab (after --), e.g. --threads 1")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.perf_counter()
    figures: dict[str, Any] = {"runs": args.runs, "bench_args": args.bench_args}
    with tempfile.TemporaryDirectory(prefix="ab-validation-") as tmp_s:
        tmp = Path(tmp_s)
        model, why = (args.model_dir, "given") if args.model_dir else demo_or_standin(tmp)
        figures["model"] = f"{model} ({why})"
        print(f"model: {figures['model']}; {args.runs} runs each; extra flags: {args.bench_args or 'none'}")
        candidate = copy_bundle(model, tmp / "candidate")
        if "aa_ab" not in skip:
            figures["aa_ab"] = aa_ab(model, args.runs, args.bench_args)
        if "aa_compare" not in skip:
            figures["aa_compare"] = aa_compare(model, args.runs, tmp, args.bench_args)
        if "ab" not in skip:
            for factor in (0.10, 0.25):
                figures[f"ab_plus{round(factor * 100)}"] = ab_slowdown(
                    model, candidate, factor, args.runs, args.bench_args
                )
    figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print("\nsummary")
    for key, label in (
        ("aa_ab", "A/A bench ab: false regressions"),
        ("aa_compare", "A/A bench compare: false regressions"),
    ):
        if key in figures:
            n = sum(1 for s in figures[key] if s["verdict"] == "regression")
            which = sorted({m for s in figures[key] for m in s["regressions"]})
            print(f"  {label}: {n}/{len(figures[key])}" + (f" (metrics: {', '.join(which)})" if which else ""))
    for key in ("ab_plus10", "ab_plus25"):
        if key in figures:
            hit = sum(1 for s in figures[key] if s["latency_p50_ms"]["verdict"] == "regression")
            ratios = [s["latency_p50_ms"]["ratio"] for s in figures[key]]
            print(
                f"  A/B +{key[7:]}% slower, tolerance 5%: p50 regression detected {hit}/{len(figures[key])} "
                f"(p50 ratios {min(ratios):.3f}–{max(ratios):.3f})"
            )
    print(f"  elapsed {figures['elapsed_s']} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
