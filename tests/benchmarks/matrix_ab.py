"""A whole matrix through `bench ab`: both sides measured in one job, cell by cell, every row one Holm family.

    python tests/benchmarks/matrix_ab.py --runs 20 --threads 1 --twin-layers 11,0   # quiet A/A + twin, then hog A/A
    python tests/benchmarks/matrix_ab.py --runs 2 --record /tmp/ab.json            # does it work (a few minutes)

The cross-run half of issue 24's target (two `bench matrix` runs, `bench compare`) is `matrix_aa.py`: there the
A/A side holds (0 of 20 with a false row) but a +25 % twin hides (3–5 of 20 caught) because this host's slow
spells last longer than a matrix and touch cells unevenly. This script measures the gate that shares those
spells between the sides: every run is the real CLI in a fresh process,

    bench ab --model-dir SIDE --against DEMO --variant fp32,fp16,int8,uint8,q4,q4f16,bnb4 --batch-sizes 1,8 --json

(7 ONNX variants × batch 1 and 8: 14 cells, each interleaved in AB/BA blocks, p50 / p95 / RSS / size rows).

Conditions:
- ``quiet``: SIDE = the demo itself (A/A): every row called a regression or an improvement is false.
- ``twin``: SIDE = a copy of the demo whose ``--twin`` variant (int8) does ~25 % more compute (matrix_aa's twin:
  the same predictions). Caught: one of the twin's latency rows a regression; any other row flagged is false.
  Quiet A/A and twin runs alternate, so they share the host's state over the hour.
- ``hog``: A/A beside a one-core busy loop (bench ab then fits its threads to the load, and says so).

Each comparison is also re-judged in-process with every row alone (``Tolerances(family="none")``) to show what
Holm changes. Raw counts per run go to ``--record``; a table is printed. Exit 0 always: the targets (a false row in
≤ 1 of 20 comparisons; the twin caught in ≥ 19 of 20, nothing else flagged) are judged by reading it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_aa import build_twin, counted, flagged_rows, print_table, tally
from perf_common import DEMO, REPO, bench_json, cpu_hog

VARIANTS = "fp32,fp16,int8,uint8,q4,q4f16,bnb4"


def ab(side: Path, out: Path, extra: list[str]) -> dict[str, Any] | None:
    """One whole-matrix `bench ab` (side against the demo); its CompareResult JSON, or None when it failed."""
    start = time.monotonic()
    args = ["ab", "--model-dir", side, "--against", DEMO, "--variant", VARIANTS, "--batch-sizes", "1,8"]
    rc, doc, err = bench_json(*args, "--no-explain", "--json", "--out", out, *extra, timeout=3600)
    took = time.monotonic() - start
    if doc is None:
        print(f"   ab {out.name} failed (exit {rc}): {err.strip().splitlines()[-1:] if err else ''}", file=sys.stderr)
        return None
    print(f"   ab {out.parent.name}/{out.name}: {took:.0f} s, exit {rc}", flush=True)
    doc["_exit"], doc["_seconds"] = rc, round(took, 1)
    return doc


def one_by_one(out: Path) -> list[dict[str, Any]]:
    """The run's rows judged again with every row alone (no Holm): what a gate without family control flags."""
    from bench.compare import Tolerances, compare_runs
    from bench.results import RunResult

    base, cur = RunResult.load(out / "baseline"), RunResult.load(out / "current")
    pairs = list(zip(base.cells, cur.cells, strict=True))
    result = compare_runs(base, cur, Tolerances(family="none"), pairs=pairs)
    return flagged_rows([asdict(r) for r in result.rows])


def judge(doc: dict[str, Any], out: Path, twin: str | None) -> dict[str, Any]:
    """One run counted as matrix_aa counts a comparison, plus the twin's latency rows and the threads used."""
    twin_rows = [
        {
            "batch": r["key"]["batch_size"],
            "metric": r["metric"],
            "verdict": r["verdict"],
            "ratio": r.get("ratio"),
            "interval": [r.get("ci_low"), r.get("ci_high")],
        }
        for r in doc["rows"]
        if twin is not None and r["key"]["variant"] == twin and r["metric"].startswith("latency")
    ]
    designs = json.loads((out / "current" / "results.json").read_text(encoding="utf-8"))["config"].get("ab_cells", [])
    return {
        "out": str(out),
        "exit": doc["_exit"],
        "seconds": doc["_seconds"],
        **counted(doc, one_by_one(out), twin),
        "twin_rows": twin_rows or None,
        "threads": sorted({d.get("threads") or 0 for d in designs}),
        "threads_why": sorted({d["threads_why"] for d in designs if d.get("threads_why")}),
        "load": os.getloadavg()[0],
    }


def summarise(condition: str, runs: list[dict[str, Any] | None]) -> dict[str, Any]:
    done = [r for r in runs if r is not None]
    seconds = sorted(r["seconds"] for r in done)
    return {
        **tally(condition, done, len(runs) - len(done)),
        "median_seconds": seconds[len(seconds) // 2] if seconds else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="comparisons per condition")
    ap.add_argument("--conditions", default="quiet,twin,hog", help="comma list of quiet, twin, hog")
    ap.add_argument("--twin", default="int8", help="the variant replaced by a +25 %% slower twin")
    ap.add_argument("--twin-layers", default=None, help="PER_IMAGE,PER_CALL side-branch layers (default: measured)")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "matrix-ab", help="ab outputs and the twin model")
    ap.add_argument("--record", type=Path, default=REPO / "docs" / "measurements" / "matrix-ab.json")
    ap.add_argument(
        "--threads", type=int, default=None, help="intra-op threads of every bench ab and of the twin's sizing"
    )
    ap.add_argument("--ab-arg", action="append", default=[], help="extra argument for bench ab (repeatable)")
    args = ap.parse_args()
    if args.threads:
        args.ab_arg.append(f"--threads={args.threads}")
    conditions = args.conditions.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "runs": args.runs,
        "ab": ["--variant", VARIANTS, "--batch-sizes", "1,8", "--no-explain", *args.ab_arg],
        "comparisons": {},
        "summary": [],
    }
    if "twin" in conditions:
        given = tuple(int(n) for n in args.twin_layers.split(",")) if args.twin_layers else None
        twin_dir, record["twin"] = build_twin(args.out, args.twin, given, args.threads)  # type: ignore[arg-type]
        print(f"twin of {args.twin}: {record['twin']}", flush=True)
    runs: dict[str, list[dict[str, Any] | None]] = {c: [] for c in conditions}
    for i in range(args.runs):
        for condition in (c for c in ("quiet", "twin") if c in conditions):
            out = args.out / condition / f"run{i:02d}"
            doc = ab(twin_dir if condition == "twin" else DEMO, out, args.ab_arg)
            runs[condition].append(judge(doc, out, args.twin if condition == "twin" else None) if doc else None)
    if "hog" in conditions:
        with cpu_hog():
            for i in range(args.runs):
                out = args.out / "hog" / f"run{i:02d}"
                doc = ab(DEMO, out, args.ab_arg)
                runs["hog"].append(judge(doc, out, None) if doc else None)
    for condition in conditions:
        record["comparisons"][condition] = runs[condition]
        record["summary"].append(summarise(condition, runs[condition]))
    record["wall_s"] = round(time.monotonic() - started, 1)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print_table(record["summary"], ("median s", "median_seconds"))
    print(f"\nwrote {args.record} ({record['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
