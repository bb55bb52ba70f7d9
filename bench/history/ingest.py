"""Runs as history rows: a results.json (or a folder holding one), a ``bench compare``/``bench ab`` JSON
(or a ``bench ab --out`` folder), each turned into one run row and its points.

A compare/ab JSON stands for its *current* side: when that side's results.json is still where the JSON
says, it is read in full (intervals and replicates included); else the rows' current figures are kept
(machine class "unknown": the JSON does not say it).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.cluster import machine_class
from bench.errors import InputError
from bench.history.store import PointRow, RunRecord, RunRow
from bench.results import ACCURACY_METRICS, CELL_METRICS, CellResult, RunResult
from bench.stats import quantile_interval, replicate_groups

INTERVAL_QUANTILES = ("p50", "p95", "p99")  # the quantiles stored with a 95 % interval (a bootstrap each)
# bench.stats' two-level bootstrap, fewer draws than a verdict's: the band drawn around a trend, not a decision;
# 400 keeps `history add` within its 0.2 s a run (42 intervals for a 14-cell matrix)
INTERVAL_BOOT = 400
# service figures (bench matrix --with-service): metric → (where in the entry, unit)
SERVICE_METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("service_p50_ms", ("load", "latency_ms", "p50"), "ms"),
    ("service_p99_ms", ("load", "latency_ms", "p99"), "ms"),
    ("service_throughput_rps", ("load", "throughput_rps"), "requests/s"),
    ("service_inprocess_p50_ms", ("inprocess_p50_ms",), "ms"),
    ("service_overhead_p50_ms", ("overhead_p50_ms",), "ms"),
    ("service_max_rate_rps", ("max_rate", "rate_rps"), "requests/s"),
)


def git_head(where: Path | None = None) -> tuple[str | None, str | None]:
    """(commit, branch) of the git checkout at ``where`` (the working folder), (None, None) outside one."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() or None if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    branch = git("rev-parse", "--abbrev-ref", "HEAD") if commit else None
    return commit, (None if branch == "HEAD" else branch)


def read_record(
    path: str | Path,
    commit: str | None = None,
    branch: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunRecord:
    """One history record from ``path`` (results.json, compare/ab JSON, or a folder holding one)."""
    path = Path(path)
    source = "results"
    if path.is_dir():
        for name in ("results.json", "compare.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise InputError(f"{path} holds no results.json or compare.json (give a results file or its folder)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path} not found") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: neither a results file nor a compare JSON")
    if "rows" in data and isinstance(data.get("current"), dict):
        source = "compare"
        current = _current_results(path, data)
        if current is None:
            return _compare_record(path, data, commit, branch, tags)
        run, path = current
    elif "cells" in data:
        run = RunResult.load(path)
    else:
        raise InputError(f"{path}: neither a results file (no 'cells') nor a compare JSON (no 'rows')")
    return RunRecord(
        RunRow(
            run_id=run.run_id,
            created=run.created,
            commit=commit,
            branch=branch,
            machine_id=run.environment.get("machine_id"),
            source=source,
            path=str(path),
            tags=dict(tags or {}),
        ),
        run_points(run),
    )


def run_points(run: RunResult) -> list[PointRow]:
    """Every figure of the run's cells that ran (and of its service entries), a row each."""
    points: list[PointRow] = []
    for cell in run.cells:
        if cell.status != "ok":
            continue
        where = (machine_class(cell, run), cell.variant, cell.provider, cell.batch_size)
        n = (cell.latency_ms or {}).get("n")
        groups = _groups(cell)
        for metric, at, unit, q in CELL_METRICS:
            value = _dig(cell, at)
            if value is None:
                continue
            low = high = None
            reps = None
            if q is not None:
                if q in INTERVAL_QUANTILES and groups:
                    interval = quantile_interval(groups, q, n_boot=INTERVAL_BOOT)
                    low, high = (interval[1], interval[2]) if interval else (None, None)
                reps = _replicates(cell)
            points.append(PointRow(*where, "", metric, float(value), low, high, unit, n if q else None, reps))
        accuracy = cell.accuracy
        passes: list[tuple[str, Mapping[str, Any]]] = [("clean", accuracy)] if accuracy else []
        passes += [(p["perturbation"], p) for p in (accuracy or {}).get("perturbations") or []]
        for name, scores in passes:
            figures = {**scores, "flip_rate": (scores.get("agreement") or {}).get("flip_rate")}
            for metric, unit in ACCURACY_METRICS:
                if isinstance(figures.get(metric), (int, float)):
                    points.append(PointRow(*where, name, metric, float(figures[metric]), unit=unit, n=scores.get("n")))
    for entry in run.service or []:
        if entry.get("status") != "ok":
            continue
        klass = _service_class(run, entry.get("provider", "cpu"))
        for metric, at, unit in SERVICE_METRICS:
            value = _dig_map(entry, at)
            if isinstance(value, (int, float)):
                points.append(
                    PointRow(
                        klass,
                        entry.get("variant", "?"),
                        entry.get("provider", "?"),
                        0,
                        "service",
                        metric,
                        float(value),
                        unit=unit,
                    )
                )
    return points


def _groups(cell: CellResult) -> list[Any] | None:
    if not cell.samples_ms:
        return None
    groups, _unit = replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    return groups


def _replicates(cell: CellResult) -> dict[str, Any] | None:
    reps = cell.replicates
    if not reps:
        return None
    keep = ("count", "p50_ms", "cv_between", "cv_within")
    return {k: reps[k] for k in keep if k in reps}  # type: ignore[literal-required]


def _service_class(run: RunResult, provider: str) -> str:
    probe = CellResult(variant="", provider=provider, batch_size=1)
    return machine_class(probe, run)


def _current_results(path: Path, data: dict[str, Any]) -> tuple[RunResult, Path] | None:
    """The compare JSON's current side as a RunResult, when its results file is still there."""
    label = data["current"]
    candidates = [Path(label["path"])] if label.get("path") else []
    candidates.append(path.parent / "current" / "results.json")  # bench ab --out DIR
    for candidate in candidates:
        candidate = candidate / "results.json" if candidate.is_dir() else candidate
        if candidate.is_file():
            try:
                run = RunResult.load(candidate)
            except InputError:
                continue
            if run.run_id == label.get("run_id"):
                return run, candidate
    return None


def _compare_record(
    path: Path, data: dict[str, Any], commit: str | None, branch: str | None, tags: Mapping[str, str] | None
) -> RunRecord:
    label = data["current"]
    if not label.get("run_id"):
        raise InputError(f"{path}: the compare JSON's current side has no run_id")
    units = {m: u for m, _at, u, _q in CELL_METRICS}
    points = []
    for row in data.get("rows") or []:
        key, value = row.get("key") or {}, row.get("current")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key.get("variant"):
            points.append(
                PointRow(
                    "unknown",
                    str(key["variant"]),
                    str(key.get("provider", "?")),
                    int(key.get("batch_size", 0)),
                    "",
                    str(row.get("metric")),
                    float(value),
                    unit=units.get(str(row.get("metric"))),
                )
            )
    run = RunRow(
        run_id=str(label["run_id"]),
        created=str(label.get("created") or ""),
        commit=commit,
        branch=branch,
        machine_id=label.get("machine_id"),
        source="compare",
        path=str(path),
        tags=dict(tags or {}),
    )
    return RunRecord(run, points)


def _dig(record: Any, at: tuple[str, ...]) -> Any:
    value = getattr(record, at[0], None)
    return _dig_map(value, at[1:]) if len(at) > 1 else value


def _dig_map(value: Any, at: tuple[str, ...]) -> Any:
    for key in at:
        value = value.get(key) if isinstance(value, dict) else None
    return value


__all__ = ["INTERVAL_QUANTILES", "SERVICE_METRICS", "git_head", "read_record", "run_points"]
