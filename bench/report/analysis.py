"""Figures the report derives from a RunResult: comparison with the reference, Pareto front, recommendation.

Pure functions of the stored results (no measuring), so ``bench report`` re-derives them exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench import stats
from bench.report.policy import FAIL, NOT_MEASURED, CellChecks, PolicyVerdict
from bench.results import CellResult, RankedCell, RecommendationInfo, RunResult


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
        accuracy, ref_accuracy = acc.get("accuracy"), ref_acc.get("accuracy")
        delta = None
        if accuracy is not None and ref_accuracy is not None:
            delta = (accuracy - ref_accuracy) * 100.0
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
    value = (cell.latency_ms or {}).get(rank_by.removesuffix("_ms"))  # a CellLatency key: int or float
    return value if isinstance(value, (int, float)) else None


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
    # passing cells whose interval on the ranking metric overlaps the best one's (the choice among them by TIE_RULE)
    tied: list[CellChecks] = field(default_factory=list)
    intervals: dict[tuple[str, str, int], tuple[float, float, float]] = field(default_factory=dict)
    rule: str = ""

    def as_dict(self) -> RecommendationInfo:
        """The recommendation for results.json and --json: choice, ties, intervals, the rule that broke the tie."""

        def label(row: CellChecks) -> RankedCell:
            interval = self.intervals.get(row.cell.key)
            return {
                "variant": row.cell.variant,
                "provider": row.cell.provider,
                "batch_size": row.cell.batch_size,
                "value": None if interval is None else round(interval[0], 5),
                "interval": None if interval is None else [round(interval[1], 5), round(interval[2], 5)],
            }

        return {
            "choice": None if self.choice is None else label(self.choice),
            "rank_by": self.rank_by,
            "tied": [label(r) for r in self.tied],
            "rule": self.rule or None,
            "passing": len(self.passing),
            "candidates": self.candidates,
        }


TIE_RULE = "smaller model file, then higher accuracy"


def rank_interval(cell: CellResult, rank_by: str) -> tuple[float, float, float] | None:
    """(point, low, high) of a cell's ranking figure: two-level bootstrap over its replicates (blocks for
    older files). Throughput is images/s, so its interval is the inverse of the median latency's."""
    if not cell.samples_ms:
        return None
    groups, _unit = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    statistic = "median" if rank_by == "throughput_ips" else rank_by.removesuffix("_ms")
    got = stats.quantile_interval(groups, statistic)
    if got is None or rank_by != "throughput_ips":
        return got
    per_image = 1000.0 * cell.batch_size
    return per_image / got[0], per_image / got[2], per_image / got[1]


def recommend(result: RunResult, verdict: PolicyVerdict) -> Recommendation:
    """Best passing candidate by the policy's ``rank_by``; otherwise what blocked every candidate.

    Candidates whose interval on the ranking figure overlaps the best one's are tied: noise cannot order
    them, so the choice among them follows ``TIE_RULE`` and the report names the tie.
    """
    rank_by = verdict.policy.rank_by
    passing = sorted(verdict.passing, key=lambda r: _rank_key(r.cell, rank_by))
    rec = Recommendation(
        choice=passing[0] if passing else None,
        rank_by=rank_by,
        passing=passing,
        candidates=len(verdict.candidates),
        pareto=pareto_front(result),
    )
    if passing:
        _break_ties(result, rec)
    if len(passing) > 1:
        rec.runner_up = next(r for r in passing if r is not rec.choice)
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


def _break_ties(result: RunResult, rec: Recommendation) -> None:
    """Find the passing cells tied with the best one and choose among them by TIE_RULE."""
    for row in rec.passing:
        interval = rank_interval(row.cell, rec.rank_by)
        if interval is not None:
            rec.intervals[row.cell.key] = interval
    best = rec.passing[0]
    best_iv = rec.intervals.get(best.cell.key)
    if best_iv is None:
        return
    higher_is_better = rec.rank_by == "throughput_ips"

    def overlaps(iv: tuple[float, float, float]) -> bool:
        return iv[2] >= best_iv[1] if higher_is_better else iv[1] <= best_iv[2]

    tied = [r for r in rec.passing if r.cell.key in rec.intervals and overlaps(rec.intervals[r.cell.key])]
    if len(tied) < 2:
        return

    def tie_key(row: CellChecks) -> tuple[float, float, tuple[float, float, str]]:
        size = row.cell.model.size_mb if row.cell.model else float("inf")
        accuracy = (result.accuracy_of(row.cell.variant, row.cell.provider) or {}).get("accuracy")
        return (size, -(accuracy if accuracy is not None else -1.0), _rank_key(row.cell, rec.rank_by))

    rec.tied = sorted(tied, key=tie_key)
    rec.choice = rec.tied[0]
    rec.rule = TIE_RULE


__all__ = [
    "TIE_RULE",
    "Comparison",
    "Recommendation",
    "compare_to_reference",
    "ok_cells",
    "pareto_front",
    "rank_interval",
    "rank_value",
    "recommend",
]
