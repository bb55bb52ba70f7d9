"""``bench calibrate``: how trustworthy is a latency verdict for this model on this machine?

Runs K A/A gates of one model against itself and reports what a user needs to size a gate:

- in-job (``bench ab``, both sides interleaved): false alarms out of K, the median MDE reached at the
  given budget, the CVs between and within replicates, and the replicates per side needed for a
  target MDE (Kalibera & Jones: the interval shrinks as 1/sqrt(replicates) when replicates are the
  unit that varies);
- cross-run (separate ``bench run`` processes, compared pairwise in sequence): false alarms, and the
  spread of the run median across processes beyond what one run's replicates show (``sigma_run``).

The result (calibration.json) can be stored beside a baseline's results.json: ``bench compare`` then
widens a cross-run latency interval by that measured run-to-run spread, and names a calibration made
on another machine instead of using it.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import environment, stats
from bench._cell import cell_spec, run_cell_process
from bench.ab import AbSide, auto_blocks, measure_ab, timed_for_a_while
from bench.bundle import Bundle
from bench.compare import Tolerances, compare_runs
from bench.errors import CellNotRun, InputError
from bench.modelfile import model_info
from bench.results import CellResult, Environment, RunResult, atomic_write_text
from bench.runner import RunOptions
from bench.variants import ensure_variant

LogFn = Callable[[str], None]
CALIBRATION_FILE = "calibration.json"
CELL_TIMEOUT_S = 900.0


def run_calibration(
    bundle: Bundle,
    variant: str,
    provider: str,
    options: RunOptions,
    runs: int = 10,
    blocks: int | None = None,
    target_mde: float = 0.05,
    tolerances: Tolerances | None = None,
    cross_run: bool = True,
    allow_build: bool = True,
    log: LogFn | None = None,
) -> dict[str, Any]:
    """K A/A gates (in-job and cross-run) of ``variant`` on ``provider``; the calibration object."""
    if runs < 2:
        raise InputError(f"--runs must be ≥ 2, got {runs}")
    if not 0 < target_mde < 1:
        raise InputError(f"--target-mde must be a fraction between 0 and 1 (e.g. 5% or 0.05), got {target_mde}")
    tol = tolerances or Tolerances()
    say = log or (lambda _m: None)
    options = timed_for_a_while(options)  # as bench ab: each side is timed for at least this long
    path = ensure_variant(bundle, variant, allow_build=allow_build, log=log)
    side = AbSide(path, variant, bundle.root)
    blocks = blocks or auto_blocks(side, provider, options, log)
    in_job: list[dict[str, Any]] = []
    for k in range(runs):
        base_run, cur_run = measure_ab(
            side, side, provider, replace(options, seed=options.seed + k), blocks=blocks, isolated_memory=False
        )
        cell = cur_run.cells[0]
        if cell.status != "ok":
            raise CellNotRun(f"{variant}/{provider}: {cell.reason or cell.status}")
        row = _p50_row(compare_runs(base_run, cur_run, tol, pairs=[(base_run.cells[0], cell)]))
        in_job.append(row)
        say(f"calibrate: A/A gate {k + 1}/{runs}: {row['verdict']} ×{row['ratio']} (MDE +{_pct(row['mde'])})")
    result: dict[str, Any] = {
        "kind": "bench calibration",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine_id": environment.fingerprint(options.session.provider_options.device_id).get("machine_id"),
        "model": {"dir": str(bundle.root), "variant": variant, "sha256": model_info(path).sha256},
        "provider": provider,
        "config": {**options.as_config(), "blocks": blocks, "runs": runs},
        "tolerance": tol.latency,
        "target_mde": target_mde,
        "in_job": _summary(in_job, blocks, target_mde, tol.latency),
    }
    if cross_run:
        result["cross_run"] = _cross_run(path, variant, provider, bundle.root, options, runs, tol, say)
    return result


def _p50_row(result: Any) -> dict[str, Any]:
    row = next(r for r in result.rows if r.metric == "latency_p50_ms")
    se = None
    if row.ci_low and row.ci_high:
        se = (math.log(row.ci_high) - math.log(row.ci_low)) / (2 * 1.96)
    return {
        "verdict": row.verdict,
        "ratio": row.ratio,
        "mde": row.mde,
        "se_log": se,
        "cv_between": row.cv_between,
        "cv_within": row.cv_within,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _summary(rows: list[dict[str, Any]], replicates: int, target_mde: float, tolerance: float) -> dict[str, Any]:
    verdicts = Counter(r["verdict"] for r in rows)
    ses = [r["se_log"] for r in rows if r["se_log"] is not None]
    mdes = [r["mde"] for r in rows if r["mde"] is not None]
    between = [v for r in rows for v in (r["cv_between"] or []) if v is not None]
    within = [v for r in rows for v in (r["cv_within"] or []) if v is not None]
    se = float(np.median(ses)) if ses else None
    needed = stats.replicates_for_mde(se, replicates, target_mde, tolerance) if se else None
    false = verdicts.get("regression", 0) + verdicts.get("improvement", 0)
    return {
        "gates": len(rows),
        "verdicts": dict(verdicts),
        "false_alarms": false,
        "false_alarm_rate": round(false / len(rows), 4) if rows else None,
        "replicates_per_side": replicates,
        "mde_median": round(float(np.median(mdes)), 4) if mdes else None,
        "se_log_median": None if se is None else round(se, 5),
        "cv_between_median": round(float(np.median(between)), 5) if between else None,
        "cv_within_median": round(float(np.median(within)), 5) if within else None,
        "replicates_for_target_mde": needed,
        "note": None
        if needed or target_mde > tolerance
        else f"a target MDE of {_pct(target_mde)} is below the {_pct(tolerance)} tolerance: lower the tolerance first",
    }


def _cross_run(
    path: Path,
    variant: str,
    provider: str,
    model_dir: Path,
    options: RunOptions,
    runs: int,
    tol: Tolerances,
    say: LogFn,
) -> dict[str, Any]:
    """runs + 1 separate processes (each a `bench run` cell with its replicates), compared in sequence."""
    cells: list[CellResult] = []
    info = model_info(path)
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as tmp:
        for k in range(runs + 1):
            spec = cell_spec(variant, provider, model_dir, path, replace(options, seed=options.seed + k))
            cell = run_cell_process(spec, CELL_TIMEOUT_S, Path(tmp), tag=f"run{k}")
            if cell.status != "ok":
                raise CellNotRun(f"{variant}/{provider}: {cell.reason or cell.status}")
            cell.model = info
            cells.append(cell)
            p50 = (cell.latency_ms or {}).get("p50")
            say(f"calibrate: separate run {k + 1}/{runs + 1}: p50 {p50} ms")
    rows = []
    for a, b in itertools.pairwise(cells):
        env: Environment = {"machine_id": "this"}
        rows.append(_p50_row(compare_runs(RunResult(env, {}, [a]), RunResult(env, {}, [b]), tol)))
    log_medians = np.log([float(np.median(c.samples_ms)) for c in cells])
    within = [r["se_log"] for r in rows if r["se_log"] is not None]
    # the spread of one run's log median across processes, beyond what its own replicates account for
    seen = float(np.var(log_medians, ddof=1))
    explained = float(np.median(within)) ** 2 / 2 if within else 0.0  # se of a ratio = sqrt(2) × se of one side
    summary = _summary(rows, options.replicates, 0.0, tol.latency)
    summary.pop("replicates_for_target_mde")
    summary.pop("note")
    summary["sigma_run"] = round(math.sqrt(max(0.0, seen - explained)), 5)
    summary["run_medians_ms"] = [round(float(np.median(c.samples_ms)), 5) for c in cells]
    return summary


def write_calibration(calibration: dict[str, Any], out: Path) -> Path:
    """calibration.json in ``out`` (a folder, e.g. beside a baseline's results.json)."""
    path = out / CALIBRATION_FILE if out.suffix != ".json" else out
    atomic_write_text(path, json.dumps(calibration, indent=2, allow_nan=False) + "\n")
    return path


def load_calibration(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"calibration file {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "bench calibration":
        raise InputError(f"{path} is not a bench calibration file (made by `bench calibrate --out`)")
    return data


def summary_lines(calibration: dict[str, Any]) -> list[str]:
    """What `bench calibrate` prints for a person."""
    job, model = calibration["in_job"], calibration["model"]
    lines = [
        f"bench calibrate · {model['variant']} on {calibration['provider']} · machine {calibration['machine_id']}",
        f"in-job A/A gates (bench ab, {job['replicates_per_side']} replicates per side): {job['false_alarms']} false "
        f"alarm(s) in {job['gates']} ({dict(job['verdicts'])}); MDE median +{_pct(job['mde_median'])}; CV between "
        f"replicates {_pct(job['cv_between_median'])}, within {_pct(job['cv_within_median'])}",
    ]
    if job["replicates_for_target_mde"]:
        lines.append(
            f"for an MDE of {_pct(calibration['target_mde'])}: ≈{job['replicates_for_target_mde']} "
            "replicates per side (--blocks)"
        )
    elif job.get("note"):
        lines.append(job["note"])
    run = calibration.get("cross_run")
    if run:
        lines.append(
            f"cross-run A/A (separate processes, bench compare): {run['false_alarms']} false alarm(s) in "
            f"{run['gates']} ({dict(run['verdicts'])}); run-to-run spread beyond replicates σ = "
            f"{_pct(run['sigma_run'])} (bench compare widens cross-run intervals by it)"
        )
    return lines


def calibration_beside(results: Path) -> Path | None:
    """The calibration.json stored beside a results file (or in its folder), if there is one."""
    path = (results if results.is_dir() else results.parent) / CALIBRATION_FILE
    return path if path.is_file() else None


__all__ = [
    "CALIBRATION_FILE",
    "calibration_beside",
    "load_calibration",
    "run_calibration",
    "summary_lines",
    "write_calibration",
]
