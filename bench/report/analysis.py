"""Figures the report derives from a RunResult: comparison with the reference, Pareto front, recommendation.

Pure functions of the stored results (no measuring), so ``bench report`` re-derives them exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.report.policy import FAIL, NOT_MEASURED, CellChecks, PolicyVerdict
from bench.results import CellResult, RunResult


def ok_cells(result: RunResult) -> list[CellResult]:
    return [c for c in result.cells if c.status == "ok" and c.latency_ms]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _gpu_peak(cell: CellResult) -> float | None:
    mem = cell.memory or {}
    process = mem.get("gpu_process_peak_mb")
    return process if process is not None else mem.get("gpu_device_peak_mb")


@dataclass(frozen=True)
class Comparison:
    """One cell against the reference variant's cell on the same provider and batch size."""

    cell: CellResult
    baseline: CellResult | None
    speedup_p50: float | None = None  # baseline p50 / cell p50: > 1 is faster
    throughput_ratio: float | None = None
    rss_ratio: float | None = None  # cell / baseline: < 1 is smaller
    gpu_ratio: float | None = None
    size_ratio: float | None = None
    accuracy_delta_pt: float | None = None  # cell − baseline, percentage points
    flip_rate: float | None = None


def compare_to_reference(result: RunResult, reference: str) -> list[Comparison]:
    """Every measured non-reference cell against ``reference`` on the same provider and batch size."""
    base = {(c.provider, c.batch_size): c for c in ok_cells(result) if c.variant == reference}
    rows = []
    for cell in ok_cells(result):
        if cell.variant == reference:
            continue
        b = base.get((cell.provider, cell.batch_size))
        if b is None:
            rows.append(Comparison(cell, None))
            continue
        acc = result.accuracy_of(cell.variant, cell.provider) or {}
        ref_acc = result.accuracy_of(reference, cell.provider) or {}
        delta = None
        if acc.get("accuracy") is not None and ref_acc.get("accuracy") is not None:
            delta = (acc["accuracy"] - ref_acc["accuracy"]) * 100.0
        rows.append(
            Comparison(
                cell,
                b,
                speedup_p50=_ratio((b.latency_ms or {}).get("p50"), (cell.latency_ms or {}).get("p50")),
                throughput_ratio=_ratio(cell.throughput_ips, b.throughput_ips),
                rss_ratio=_ratio((cell.memory or {}).get("rss_peak_mb"), (b.memory or {}).get("rss_peak_mb")),
                gpu_ratio=_ratio(_gpu_peak(cell), _gpu_peak(b)),
                size_ratio=_ratio(cell.model.size_mb if cell.model else None, b.model.size_mb if b.model else None),
                accuracy_delta_pt=delta,
                flip_rate=(acc.get("agreement") or {}).get("flip_rate"),
            )
        )
    return rows


def rank_value(cell: CellResult, rank_by: str) -> float | None:
    if rank_by == "throughput_ips":
        return cell.throughput_ips
    return (cell.latency_ms or {}).get(rank_by.removesuffix("_ms"))


def _rank_key(cell: CellResult, rank_by: str) -> tuple[float, float, str]:
    value = rank_value(cell, rank_by)
    primary = float("inf") if value is None else (-value if rank_by == "throughput_ips" else value)
    return (primary, (cell.latency_ms or {}).get("p50") or float("inf"), "/".join(map(str, cell.key)))


def pareto_front(result: RunResult) -> list[CellResult]:
    """Measured cells with accuracy that no other cell beats on both accuracy (higher) and p95 (lower)."""
    points = []
    for cell in ok_cells(result):
        acc = (result.accuracy_of(cell.variant, cell.provider) or {}).get("accuracy")
        p95 = (cell.latency_ms or {}).get("p95")
        if acc is not None and p95 is not None:
            points.append((cell, acc, p95))
    front = [c for c, a, p in points if not any(a2 >= a and p2 <= p and (a2 > a or p2 < p) for _, a2, p2 in points)]
    return sorted(front, key=lambda c: ((c.latency_ms or {}).get("p95") or 0.0, "/".join(map(str, c.key))))


@dataclass
class Recommendation:
    """The release choice computed from the measurements and the policy (None when nothing passes)."""

    choice: CellChecks | None
    rank_by: str
    passing: list[CellChecks]
    candidates: int
    runner_up: CellChecks | None = None
    # check → how many candidate cells it failed or left unmeasured ("not_run": cells that did not run)
    blockers: list[tuple[str, int]] = field(default_factory=list)
    pareto: list[CellResult] = field(default_factory=list)


def recommend(result: RunResult, verdict: PolicyVerdict) -> Recommendation:
    """Best passing candidate by the policy's ``rank_by``; otherwise what blocked every candidate."""
    rank_by = verdict.policy.rank_by
    passing = sorted(verdict.passing, key=lambda r: _rank_key(r.cell, rank_by))
    rec = Recommendation(
        choice=passing[0] if passing else None,
        rank_by=rank_by,
        passing=passing,
        candidates=len(verdict.candidates),
        pareto=pareto_front(result),
    )
    if len(passing) > 1:
        rec.runner_up = passing[1]
    if not passing:
        counts: Counter[str] = Counter()
        for row in verdict.candidates:
            if row.cell.status != "ok":
                counts["not_run"] += 1
                continue
            for o in row.outcomes:
                if o.status in (FAIL, NOT_MEASURED):
                    counts[o.key] += 1
        rec.blockers = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return rec


__all__ = [
    "Comparison",
    "Recommendation",
    "compare_to_reference",
    "ok_cells",
    "pareto_front",
    "rank_value",
    "recommend",
]
