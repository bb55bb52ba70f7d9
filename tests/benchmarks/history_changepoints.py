"""Does ``bench history detect`` find the steps and creeps the per-change gate misses, and stay quiet otherwise?

    python tests/benchmarks/history_changepoints.py [--noise quiet|hog|twin] [--figure p50|floor] [--out F] [--quick]

Simulated histories, with the run-to-run noise of real A/A runs on this machine: every run's p50 is the
series' level times a factor drawn (with replacement) from the log residuals of the A/A matrices in
``<--runs-dir>/<noise>/run*/results.json`` (default ``reports/matrix-aa``; each cell's log p50 minus the median
over the runs of that cell; ``quiet``: nothing else running, ``hog``: a CPU hog beside it, ``twin``: the quiet
runs' partners, one variant slowed; ``--runs-dir reports/matrix-aa-t1`` for matrices run with ``--threads 1``).
``--figure floor``: the residuals of each cell's fastest replicate p50 instead (the history's derived ``floor``
series, ``bench.history.store.FLOOR_METRIC``; cells with fewer than 3 replicates are left out).
Counted (raw counts in the JSON):

- steps: 20 series of 80 runs with a +5 % step at a random run in 20 … 60 → found within ≤ 5 runs (target ≥ 19);
- flat: 50 series of 1,000 runs, nothing changed → false change points per 1,000 runs (target ≤ 1);
- creep: 20 series of 80 runs, +3 % on each of 10 consecutive runs (×1.34 in all) → flagged a regression at
  the default 10 % tolerance (each single +3 % step passes a 10 % per-change gate);
- ablation: the steps again with the permutation test on the log figures instead of their ranks;
- speed: ``bench history add`` per run (the real A/A results files), ``bench history detect`` over the flat
  1,000 runs × 50 series, ``bench history report`` page size — real CLI processes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.history.detect import Method, detect_series, q_statistics  # noqa: E402
from bench.history.store import PointRow, RunRecord, RunRow, Store, StoredPoint, fastest_replicate  # noqa: E402

BENCH = [sys.executable, "-m", "bench"]


def aa_residuals(runs_dir: Path, kind: str, figure: str = "p50") -> tuple[np.ndarray, list[str]]:
    """Log residuals of each A/A cell's ``figure`` (p50, or floor: its fastest replicate's p50) around that
    cell's median over the runs."""
    files = sorted(glob.glob(str(runs_dir / kind / "run*" / "results.json")))
    if len(files) < 3:
        raise SystemExit(f"need the A/A runs in {runs_dir}/{kind}/run*/results.json (tests/benchmarks/matrix_aa.py)")
    cells: dict[tuple[str, int], list[float]] = {}
    for f in files:
        for c in json.loads(Path(f).read_text())["cells"]:
            if c.get("status") != "ok" or not (c.get("latency_ms") or {}).get("p50"):
                continue
            if figure == "floor":
                value = fastest_replicate(c.get("replicates") or {})
                if value is None:
                    continue
            else:
                value = float(c["latency_ms"]["p50"])
            cells.setdefault((c["variant"], c["batch_size"]), []).append(value)
    res = [v for vals in cells.values() for v in (np.log(vals) - np.median(np.log(vals)))]
    return np.array(res), [str(Path(f).relative_to(ROOT)) for f in files]


def points(values: np.ndarray, tag: str) -> list[StoredPoint]:
    return [
        StoredPoint(
            f"{tag}-{i:04d}",
            f"2026-01-01T00:00:00+00:00#{i:05d}",
            f"c{i:04d}",
            "main",
            "sim",
            tag,
            "cpu",
            1,
            "",
            "latency_p50_ms",
            float(v),
            None,
            None,
            "ms",
        )
        for i, v in enumerate(values)
    ]


def steps(noise: np.ndarray, rng: np.random.Generator, method: Method, n_series: int = 20) -> dict[str, Any]:
    found, errors, verdicts, extra = 0, [], {}, 0
    for k in range(n_series):
        at = int(rng.integers(20, 61))
        v = 2.0 * np.exp(rng.choice(noise, 80))
        v[at:] *= 1.05
        changes = detect_series(("sim", f"s{k}", "cpu", 1, "", "latency_p50_ms"), points(v, f"s{k}"), method)
        near = [c for c in changes if abs(c.index - at) <= 5]
        extra += len(changes) - (1 if near else 0)
        if near:
            found += 1
            errors.append(near[0].index - at)
            verdicts[near[0].verdict] = verdicts.get(near[0].verdict, 0) + 1
    return {
        "series": n_series,
        "runs": 80,
        "step": 1.05,
        "found_within_5": found,
        "position_errors": errors,
        "verdicts": verdicts,
        "other_change_points": extra,
    }


def raw_steps(noise: np.ndarray, rng: np.random.Generator, method: Method, n_series: int = 20) -> dict[str, Any]:
    """The ablation behind the ranks: the same steps, E-divisive's first split and its permutation test on the
    log figures themselves (R shuffles of each series), found when p ≤ p_value within ≤ 5 runs."""
    found = 0
    for _k in range(n_series):
        at = int(rng.integers(20, 61))
        v = np.log(2.0 * np.exp(rng.choice(noise, 80)))
        v[at:] += np.log(1.05)
        q = q_statistics(v[None, :], method.min_size)[0]
        tau, observed = method.min_size + int(np.argmax(q)), float(q.max())
        shuffled = rng.permuted(np.tile(v, (method.permutations, 1)), axis=1)
        exceed = int(np.count_nonzero(q_statistics(shuffled, method.min_size).max(axis=1) >= observed * (1 - 1e-9)))
        found += (1 + exceed) / (method.permutations + 1) <= method.p_value and abs(tau - at) <= 5
    return {"series": n_series, "runs": 80, "step": 1.05, "found_within_5": int(found)}


def creep(noise: np.ndarray, rng: np.random.Generator, method: Method, n_series: int = 20) -> dict[str, Any]:
    flagged, ratios, verdicts = 0, [], {}
    for k in range(n_series):
        v = 2.0 * np.exp(rng.choice(noise, 80))
        for j in range(10):
            v[35 + j :] *= 1.03
        changes = detect_series(("sim", f"c{k}", "cpu", 1, "", "latency_p50_ms"), points(v, f"c{k}"), method)
        inside = [c for c in changes if 30 <= c.index <= 50]
        for c in inside:
            verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
        if any(c.verdict == "regression" for c in inside):
            flagged += 1
            ratios.append(round(max(c.ratio or 0 for c in inside if c.verdict == "regression"), 3))
    return {
        "series": n_series,
        "runs": 80,
        "creep": "10 x 1.03 on runs 35..44",
        "total": round(1.03**10, 3),
        "flagged_regression": flagged,
        "ratios": ratios,
        "verdicts": verdicts,
    }


def flat_store(db: Path, noise: np.ndarray, rng: np.random.Generator, runs: int, n_series: int) -> None:
    """runs × n_series flat p50 series, stored as real history rows (one run row each)."""
    levels = np.exp(rng.uniform(np.log(0.5), np.log(50.0), n_series))
    with Store.open(str(db)) as store:
        for i in range(runs):
            factors = np.exp(rng.choice(noise, n_series))
            pts = [
                PointRow(
                    "sim",
                    f"v{k // 2:02d}",
                    "cpu",
                    1 + 7 * (k % 2),
                    "",
                    "latency_p50_ms",
                    float(levels[k] * factors[k]),
                    unit="ms",
                )
                for k in range(n_series)
            ]
            created = f"2026-01-{1 + i // 100:02d}T{(i % 100) // 60:02d}:{i % 60:02d}:00+00:00"
            store.add(RunRecord(RunRow(f"flat-{i:05d}", created, commit=f"{i:08x}", branch="main"), pts))


def cli(*args: str) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [*BENCH, *args], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "BENCH_FAULTS": ""}
    )
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"bench {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc.returncode, proc.stdout, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", default="quiet", choices=["quiet", "hog", "twin"])
    ap.add_argument(
        "--runs-dir",
        type=Path,
        default=ROOT / "reports" / "matrix-aa",
        help="matrix_aa.py's --out: the A/A matrices whose run-to-run noise the histories get",
    )
    ap.add_argument(
        "--figure",
        default="p50",
        choices=["p50", "floor"],
        help="the run figure whose run-to-run noise the histories get: the cell's p50, or its floor (the fastest "
        "replicate's p50: the history's `floor` series)",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--quick", action="store_true", help="10 flat series instead of 50 (the detect timing is then not the target's)"
    )
    a = ap.parse_args()
    a.runs_dir = a.runs_dir.resolve()
    rng = np.random.default_rng(a.seed)
    noise, files = aa_residuals(a.runs_dir, a.noise, a.figure)
    method = Method()
    out: dict[str, Any] = {
        "noise": {
            "source": a.noise,
            "figure": a.figure,
            "runs_dir": str(a.runs_dir.relative_to(ROOT)) if a.runs_dir.is_relative_to(ROOT) else str(a.runs_dir),
            "files": files,
            "residuals": int(noise.size),
            "sd_log": round(float(np.std(noise, ddof=1)), 4),
            "mad_sd_log": round(float(1.4826 * np.median(np.abs(noise))), 4),
            "quantiles_log": {q: round(float(np.quantile(noise, q)), 4) for q in (0.01, 0.05, 0.5, 0.95, 0.99)},
        },
        "method": {
            k: getattr(method, k)
            for k in ("p_value", "permutations", "min_size", "window", "span", "creep_gap", "tolerance")
        },
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }
    t = time.perf_counter()
    out["steps"] = steps(noise, rng, method)
    out["creep"] = creep(noise, rng, method)
    out["steps_on_raw_figures"] = raw_steps(noise, rng, method)
    out["simulation_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps({k: out[k] for k in ("noise", "steps", "creep", "steps_on_raw_figures")}, indent=1), flush=True)
    n_series = 10 if a.quick else 50
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "flat.sqlite"
        flat_store(db, noise, rng, 1000, n_series)
        _rc, stdout, wall = cli("history", "detect", "--db", str(db), "--json")
        report = json.loads(stdout)
        out["flat"] = {
            "series": report["series"],
            "runs_per_series": report["runs"],
            "false_change_points": len(report["change_points"]),
            "per_1000_runs": round(len(report["change_points"]) / report["series"], 4),
            "false_regressions": report["regressions"],
        }
        out["detect_s"] = round(wall, 2)
        _rc, _o, wall = cli("history", "report", "--db", str(db), "--out", str(Path(tmp) / "report"), "--no-png")
        out["report"] = {
            "page_bytes": (Path(tmp) / "report" / "index.html").stat().st_size,
            "wall_s": round(wall, 2),
            "runs": 1000,
            "series": n_series,
        }
        real = sorted(glob.glob(str(a.runs_dir / "*" / "run*" / "results.json")))
        hdb = Path(tmp) / "add.sqlite"
        _rc, _o, one = cli("history", "add", real[0], "--db", str(hdb))
        _rc, _o, wall = cli("history", "add", *real[1:], "--db", str(hdb))
        out["add"] = {
            "files": len(real) - 1,
            "wall_s": round(wall, 2),
            "per_run_s": round(wall / (len(real) - 1), 3),
            "one_file_process_s": round(one, 2),
        }
    out["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    out["cpus"] = os.cpu_count()
    print(
        json.dumps({k: out[k] for k in ("flat", "detect_s", "report", "add", "loadavg_start", "loadavg_end")}, indent=1)
    )
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
