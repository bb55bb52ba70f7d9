"""Is the release recommendation stable over repeated matrices, and is a "tie" ever a cell that is really slower?

    # the full measurement (quiet machine, nothing else running): 10 quiet matrices, then 5 beside a one-core hog
    python tests/benchmarks/recommendation.py --runs 10 --out reports/recommendation/quiet
    python tests/benchmarks/recommendation.py --runs 5 --hog --out reports/recommendation/hog
    # a quick proof that the script works
    python tests/benchmarks/recommendation.py --runs 1 --iterations 100 --out /tmp/rec-check

Each run is the real CLI in a fresh process: ``bench matrix`` on the demo bundle (every variant, ``--providers
cpu``, batch 1 and 8, accuracy on the demo set, ``--iterations``/``--replicates`` as given; ``--decide S`` passes
``--decide``), its RunResult read back from ``--json``. ``--hog``: one busy-looping process beside it the whole
time (one of the two cores taken).

Counted, raw (``runs.json`` holds every run's status, choice, best, tied set, undecided set and each
contender's ratio interval and verdict):
- decided runs, the most common decided choice and how many runs chose it, undecided runs; the target is
  "the same decided choice in ≥ 9 of 10, or undecided": consistent = runs with the modal choice + undecided;
- ties beyond the margin: every tied contender of every run is checked against a reference made from all the
  runs together (each cell's calls pooled over the runs, the pooled p95 ratio to that run's best cell); a
  tie counts as false when that reference ratio is beyond the margin. The target is 0.
Exit 0 always: the targets are judged by reading the summary line and runs.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import quantile

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "variants" / "demo"


def _hog(stop: Any) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def run_matrix(out: Path, args: argparse.Namespace) -> tuple[dict[str, Any] | None, float, str]:
    """One ``bench matrix`` in a fresh process: (its RunResult, wall seconds, the tail of stderr)."""
    cmd = [
        sys.executable, "-m", "bench", "matrix",
        "--model-dir", str(args.model_dir),
        "--variants", args.variants,
        "--providers", "cpu",
        "--batch-sizes", args.batch_sizes,
        "--iterations", str(args.iterations),
        "--replicates", str(args.replicates),
        "--out", str(out),
        "--json",
    ]  # fmt: skip
    if args.decide:
        cmd += ["--decide", str(args.decide)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
    wall = time.monotonic() - started
    try:
        doc = json.loads(proc.stdout) if proc.returncode == 0 else None
    except json.JSONDecodeError:
        doc = None
    return doc, wall, proc.stderr[-2000:]


def _name(entry: dict[str, Any] | None) -> str | None:
    return None if not entry else f"{entry['variant']}/{entry['provider']}/b{entry['batch_size']}"


def summarise_run(doc: dict[str, Any], wall: float) -> dict[str, Any]:
    """What one matrix recommended, raw."""
    rec = doc.get("recommendation") or {}
    cells = [c for c in doc.get("cells") or [] if c.get("status") == "ok"]
    return {
        "run_id": doc.get("run_id"),
        "wall_s": round(wall, 1),
        "status": rec.get("status"),
        "choice": _name(rec.get("choice")),
        "best": _name(rec.get("best")),
        "margin": rec.get("margin"),
        "confidence": rec.get("confidence"),
        "tied": [_name(t) for t in rec.get("tied") or []],
        "undecided": [_name(u) for u in rec.get("undecided") or []],
        "replicates_needed": rec.get("replicates_needed"),
        "contenders": [
            {"cell": _name(c), "verdict": c.get("verdict"), "ratio": c.get("ratio"), "ci": c.get("ratio_interval")}
            for c in rec.get("contenders") or []
        ],
        "decide": rec.get("decide"),
        "passing": rec.get("passing"),
        "candidates": rec.get("candidates"),
        "noisy_cells": sum(1 for c in cells if (c.get("noise") or {}).get("noisy")),
        "contended_cells": sum(1 for c in cells if (c.get("noise") or {}).get("contended")),
    }


def pooled_quantiles(docs: list[dict[str, Any]], q: float) -> dict[str, float]:
    """Each cell's q-quantile over the calls of every run together: the reference a single run is checked by."""
    calls: dict[str, list[float]] = {}
    for doc in docs:
        for c in doc.get("cells") or []:
            if c.get("status") == "ok" and c.get("samples_ms"):
                calls.setdefault(_name(c) or "?", []).extend(c["samples_ms"])
    return {name: quantile(np.asarray(x), q) for name, x in calls.items()}


def false_ties(runs: list[dict[str, Any]], reference: dict[str, float], rank_by: str) -> tuple[int, int, list[str]]:
    """(tied contenders whose pooled reference ratio to their run's best is beyond the margin, tied contenders,
    the offending ones)."""
    bad, total, which = 0, 0, []
    for run in runs:
        best, margin = run["best"], run["margin"]
        if best is None or margin is None or best not in reference:
            continue
        for c in run["contenders"]:
            if c["verdict"] != "tied" or c["cell"] not in reference:
                continue
            total += 1
            ratio = reference[c["cell"]] / reference[best]
            if rank_by == "throughput_ips":
                ratio = 1.0 / ratio
            if ratio > 1.0 + margin:
                bad += 1
                which.append(f"{run['run_id']}: {c['cell']} ×{ratio:.3f} of {best}")
    return bad, total, which


def judge_runs(
    condition: str, docs: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, float]]:
    """The targets' counts over matrices already run: (summary, the pooled reference quantile per cell)."""
    rank_by = str(((docs[0]["config"].get("policy") or {}).get("rank_by")) if docs else "p95_ms")
    q = 0.5 if rank_by in ("p50_ms", "throughput_ips") else int(rank_by[1:3]) / 100.0
    reference = pooled_quantiles(docs, q)
    bad, tied_total, which = false_ties(runs, reference, rank_by)
    decided = [r for r in runs if r["status"] == "decided"]
    modal, modal_count = Counter(r["choice"] for r in decided).most_common(1)[0] if decided else (None, 0)
    undecided = sum(1 for r in runs if r["status"] == "undecided")
    summary = {
        "condition": condition,
        "completed": len(runs),
        "decided": len(decided),
        "modal_choice": modal,
        "modal_count": modal_count,
        "decided_choices": dict(Counter(r["choice"] for r in decided)),
        "undecided": undecided,
        "consistent": modal_count + undecided,
        "tied_contenders": tied_total,
        "ties_beyond_margin": bad,
        "ties_beyond_margin_which": which,
        "rank_by": rank_by,
        "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 1) if runs else None,
    }
    return summary, reference


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="matrices to run")
    ap.add_argument("--hog", action="store_true", help="run them beside a one-core busy loop")
    ap.add_argument("--model-dir", type=Path, default=DEMO)
    ap.add_argument("--variants", default="all")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--iterations", type=int, default=300, help="timed calls per cell (p95 needs ≥ 100)")
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--decide", type=float, default=None, help="pass --decide SECONDS to each matrix")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one matrix may take")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "recommendation")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    condition = "hog" if args.hog else "quiet"
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_hog, args=(stop,), daemon=True) if args.hog else None
    if hog is not None:
        hog.start()
    docs, runs, failures = [], [], []
    try:
        for i in range(args.runs):
            doc, wall, tail = run_matrix(args.out / f"run-{i:02d}", args)
            if doc is None:
                failures.append({"run": i, "wall_s": round(wall, 1), "stderr": tail})
                print(f"[{i + 1}/{args.runs}] matrix failed after {wall:.0f} s: {tail.splitlines()[-1:]}", flush=True)
                continue
            docs.append(doc)
            run = summarise_run(doc, wall)
            runs.append(run)
            print(
                f"[{i + 1}/{args.runs}] {run['status']}: {run['choice']} (best {run['best']}; tied {run['tied']}; "
                f"undecided {run['undecided']}; {run['noisy_cells']} noisy cells; {wall:.0f} s)",
                flush=True,
            )
    finally:
        stop.set()
        if hog is not None:
            hog.join(timeout=5)
    summary, reference = judge_runs(condition, docs, runs)
    summary.update(runs=args.runs, failed=len(failures))
    bad, tied_total, decided, modal, modal_count, undecided = (
        summary["ties_beyond_margin"],
        summary["tied_contenders"],
        summary["decided"],
        summary["modal_choice"],
        summary["modal_count"],
        summary["undecided"],
    )
    record = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": runs,
        "failures": failures,
        "reference_pooled_quantile_ms": {k: round(v, 5) for k, v in sorted(reference.items())},
    }
    (args.out / "runs.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    print(
        f"{condition}: {len(runs)} of {args.runs} matrices · decided {decided} ({modal} in {modal_count}) · "
        f"undecided {undecided} · consistent {modal_count + undecided}/{len(runs)} · ties beyond the ±"
        f"{(runs[0]['margin'] or 0) * 100 if runs else 0:g} % margin (pooled reference) {bad} of {tied_total} tied "
        f"contenders · median wall {summary['median_wall_s']} s · wrote {args.out / 'runs.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
