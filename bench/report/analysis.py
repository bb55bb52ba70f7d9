"""Figures the report derives from a RunResult: comparison with the reference, Pareto front, recommendation.

Pure functions of the stored results (no measuring), so ``bench report`` re-derives them exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Final, Literal

from bench import stats
from bench.noise import noisy_figure
from bench.report.policy import (
    FAIL,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_MEASURED,
    PASS,
    CellChecks,
    CheckOutcome,
    Policy,
    PolicyVerdict,
    evaluate_policy,
)
from bench.results import CellResult, DecideRecord, RankedCell, RecommendationInfo, RunResult


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


TIE_RULE = "smaller model file, then higher accuracy"
Status = Literal["decided", "undecided"]
Verdict = Literal["tied", "slower", "undecided"]  # a contender against the best cell
DECIDED: Final = "decided"
UNDECIDED: Final = "undecided"
TIED: Final = "tied"
SLOWER: Final = "slower"
CANNOT_TELL: Final = "undecided"
CONFIDENCE = 0.95
# `bench matrix --decide` looks again after each round of further replicates; each further look is judged at
# 1 − (1 − CONFIDENCE) / DECIDE_MAX_ROUNDS (Bonferroni over the rounds it may take), so stopping at the first
# decided look does not turn the extra looks into extra chances of a wrong decision.
DECIDE_MAX_ROUNDS = 4
N_BOOT = 2000  # as bench compare
POWER_Z = 0.8416  # one-sided z for 80 % power: "replicates needed" resolve the gap to the margin 4 times in 5


@dataclass(frozen=True)
class Contender:
    """A passing cell against the best one on the ranking figure: their ratio (> 1: slower than the best) with
    its interval (95 %; 98.75 % after --decide rounds), and the verdict on the policy's margin m: ``tied``
    (interval inside [1/(1+m), 1+m]), ``slower`` (interval wholly above 1+m) or ``undecided`` (neither: noise
    hides which)."""

    row: CellChecks
    verdict: Verdict
    ratio: float | None = None
    low: float | None = None
    high: float | None = None
    replicates: int = 0  # replicates behind the interval (the smaller side's)
    replicates_needed: int | None = None  # per cell, to settle it with 80 % power if the ratio stayed where it is
    too_noisy: bool = False  # that would take more than stats.PRACTICAL_FACTOR times the replicates
    too_small: str | None = None  # why there is no interval at all (too few calls or replicates, no raw samples)
    calls_needed: int | None = None  # too few calls for an interval of the ranking statistic: this many per cell
    could_change: bool = False  # settling it could change the choice (tie-rule preferred, or maybe faster)


@dataclass
class Recommendation:
    """The release choice computed from the measurements and the policy (None when nothing passes).

    ``status`` is ``decided`` when every other passing cell is either equivalent to the best within the margin
    (``tied``: the tie rule may choose among them) or slower than it beyond the margin; ``undecided`` when one
    that could change the choice can be told neither way (``undecided``), and then ``choice`` is provisional.
    """

    choice: CellChecks | None
    rank_by: str
    passing: list[CellChecks]
    candidates: int
    runner_up: CellChecks | None = None
    # check → how many candidate cells it failed or left unmeasured ("not_run": cells that did not run)
    blockers: list[tuple[str, int]] = field(default_factory=list)
    pareto: list[CellResult] = field(default_factory=list)
    # the best cell and the passing cells equivalent to it within the margin, in TIE_RULE order (≥ 2, else empty)
    tied: list[CellChecks] = field(default_factory=list)
    intervals: dict[tuple[str, str, int], tuple[float, float, float]] = field(default_factory=dict)
    rule: str = ""
    status: Status | None = None  # None when nothing passes
    margin: float = 0.05
    confidence: float = CONFIDENCE
    best: CellChecks | None = None
    contenders: list[Contender] = field(default_factory=list)  # every other passing cell against the best
    # the choice against the policy's objectives (ranking figure, model size, accuracy) among passing cells
    on_front: bool = True
    dominated_by: list[CellChecks] = field(default_factory=list)
    decide: DecideRecord | None = None  # what `bench matrix --decide` measured further (carried from the results)
    # deciding figures measured while the machine was busy (cell → why): a decision is never made on them
    noisy: list[tuple[CellChecks, str]] = field(default_factory=list)
    # candidates faster than the choice that fail no check but leave one undecided (an accuracy drop whose
    # interval straddles the limit): not shipped, but named, with what would settle them
    held_back: list[tuple[CellChecks, list[CheckOutcome]]] = field(default_factory=list)

    @property
    def undecided(self) -> list[Contender]:
        """Contenders that cannot be told apart from the best and whose answer could change the choice."""
        return [c for c in self.contenders if c.could_change]

    @property
    def replicates_needed(self) -> int | None:
        """Replicates per cell that would settle every undecided contender (None: unknown, or decided)."""
        needs = [c.replicates_needed for c in self.undecided]
        known = [n for n in needs if n is not None]
        return max(known) if known and len(known) == len(needs) else None

    def as_dict(self) -> RecommendationInfo:
        """The recommendation for results.json and --json: choice, status and margin, each contender's ratio to
        the best with its interval and verdict, the tied and undecided sets, what would settle it, --decide's looks."""

        def label(row: CellChecks) -> RankedCell:
            interval = self.intervals.get(row.cell.key)
            return {
                "variant": row.cell.variant,
                "provider": row.cell.provider,
                "batch_size": row.cell.batch_size,
                "value": None if interval is None else round(interval[0], 5),
                "interval": None if interval is None else [round(interval[1], 5), round(interval[2], 5)],
            }

        def versus(c: Contender) -> RankedCell:
            out = label(c.row)
            out["verdict"] = c.verdict
            out["ratio"] = None if c.ratio is None else round(c.ratio, 5)
            out["ratio_interval"] = None if c.low is None or c.high is None else [round(c.low, 5), round(c.high, 5)]
            if c.verdict == CANNOT_TELL:
                out["replicates_needed"] = c.replicates_needed
                out["could_change_choice"] = c.could_change
                if c.too_small:
                    out["too_small"] = c.too_small
            return out

        def held(row: CellChecks, checks: list[CheckOutcome]) -> RankedCell:
            out = label(row)
            out["inconclusive_checks"] = [o.key for o in checks]
            return out

        def flagged(row: CellChecks, why: str) -> RankedCell:
            out = label(row)
            out["noisy"] = why
            return out

        info: RecommendationInfo = {
            "choice": None if self.choice is None else label(self.choice),
            "rank_by": self.rank_by,
            "tied": [label(r) for r in self.tied],
            "rule": self.rule or None,
            "passing": len(self.passing),
            "candidates": self.candidates,
        }
        if self.status is not None:
            info.update(
                {
                    "status": self.status,
                    "margin": self.margin,
                    "confidence": round(self.confidence, 5),
                    "best": None if self.best is None else label(self.best),
                    "contenders": [versus(c) for c in self.contenders],
                    "undecided": [versus(c) for c in self.undecided],
                    "replicates_needed": self.replicates_needed,
                    "on_pareto_front": self.on_front,
                    "dominated_by": [label(r) for r in self.dominated_by],
                    "noisy": [flagged(r, why) for r, why in self.noisy],
                    "held_back": [held(r, checks) for r, checks in self.held_back],
                }
            )
        if self.decide is not None:
            info["decide"] = self.decide
        return info


def rank_interval(cell: CellResult, rank_by: str) -> tuple[float, float, float] | None:
    """(point, low, high) of a cell's ranking figure: two-level bootstrap over its replicates (blocks for
    older files). Throughput is images/s, so its interval is the inverse of the median latency's."""
    if not cell.samples_ms:
        return None
    groups, _unit = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    got = stats.quantile_interval(groups, _statistic(rank_by))
    if got is None or rank_by != "throughput_ips":
        return got
    per_image = 1000.0 * cell.batch_size
    return per_image / got[0], per_image / got[2], per_image / got[1]


def _statistic(rank_by: str) -> str:
    return "median" if rank_by == "throughput_ips" else rank_by.removesuffix("_ms")


def ratio_to_best(cell: CellResult, best: CellResult, rank_by: str, confidence: float) -> stats.RatioEstimate | None:
    """How much worse ``cell`` is than ``best`` on the ranking figure, as a ratio > 1 when worse (latency ÷ the
    best's; for throughput, the best's images/s ÷ this one's), with bench compare's two-level bootstrap."""
    if not cell.samples_ms or not best.samples_ms:
        return None
    mine, unit = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    theirs, _ = stats.replicate_groups(best.samples_ms, best.sample_replicates or None)
    est = stats.ratio_interval(mine, theirs, _statistic(rank_by), n_boot=N_BOOT, confidence=confidence, unit=unit)
    if rank_by != "throughput_ips":
        return est
    scale = best.batch_size / cell.batch_size  # images/s = batch × 1000 / median call time

    def scaled(v: float | None) -> float | None:
        return None if v is None else v * scale

    return replace(est, point=scaled(est.point), low=scaled(est.low), high=scaled(est.high))


def judge_contender(row: CellChecks, est: stats.RatioEstimate | None, margin: float, confidence: float) -> Contender:
    """The verdict on one contender's ratio to the best against the margin, and what would settle it."""
    upper, lower = 1.0 + margin, 1.0 / (1.0 + margin)
    if est is None:
        return Contender(row, CANNOT_TELL, too_small="no raw samples_ms: no interval")
    if not est.usable:
        need = stats.min_samples(stats.statistic_of(est.statistic))
        short_of_calls = min(est.n) < need
        return Contender(
            row,
            CANNOT_TELL,
            est.point,
            replicates=min(est.groups),
            too_small=est.too_small,
            calls_needed=need if short_of_calls else None,
            replicates_needed=None if short_of_calls else stats.MIN_GROUPS,
        )
    assert est.point is not None and est.low is not None and est.high is not None and est.se_log is not None
    base = Contender(row, TIED, est.point, est.low, est.high, replicates=min(est.groups))
    if est.low >= lower and est.high <= upper:
        return base
    if est.low > upper:
        return replace(base, verdict=SLOWER)
    needed = replicates_to_settle(est.point, est.se_log, min(est.groups), margin, confidence)
    too_noisy = needed is None or needed > stats.PRACTICAL_FACTOR * min(est.groups)
    return replace(base, verdict=CANNOT_TELL, replicates_needed=needed, too_noisy=too_noisy)


def replicates_to_settle(point: float, se_log: float, replicates: int, margin: float, confidence: float) -> int | None:
    """Replicates per cell at which the interval of a ratio whose true value is ``point`` clears the margin with
    80 % power: the MDE against the margin, (z + z_power)·se, shrinks as 1/sqrt(replicates) (Kalibera & Jones)
    until it reaches the distance between the point and the margin. None when the point sits on the margin."""
    gap = abs(math.log1p(margin) - abs(math.log(point)))
    if gap <= 1e-9 or se_log <= 0:
        return None
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    return max(stats.MIN_GROUPS, math.ceil(replicates * ((z + POWER_Z) * se_log / gap) ** 2))


def recommend(result: RunResult, verdict: PolicyVerdict) -> Recommendation:
    """Best passing candidate by the policy's ``rank_by``, its equivalents within ``rank_margin``, and whether
    the data can decide; otherwise what blocked every candidate.

    Two passing cells are tied only when the interval of their ratio lies inside the margin (equivalence,
    not overlap); the tie rule chooses among tied cells only. After `bench matrix --decide` rounds (recorded
    in ``result.recommendation["decide"]``) each look is judged at the Bonferroni level (DECIDE_MAX_ROUNDS).
    """
    policy = verdict.policy
    rank_by = policy.rank_by
    decide = (result.recommendation or {}).get("decide")
    looked_again = bool(decide and decide.get("rounds"))
    confidence = 1.0 - (1.0 - CONFIDENCE) / DECIDE_MAX_ROUNDS if looked_again else CONFIDENCE
    intervals = {r.cell.key: iv for r in verdict.passing if (iv := rank_interval(r.cell, rank_by)) is not None}

    def order(row: CellChecks) -> tuple[float, float, float, str]:
        # by the interval's point where there is one (the estimator the ratios use), else the recorded figure
        point = intervals[row.cell.key][0] if row.cell.key in intervals else rank_value(row.cell, rank_by)
        value = float("inf") if point is None else (-point if rank_by == "throughput_ips" else point)
        return (0.0 if row.cell.key in intervals else 1.0, value, *_rank_key(row.cell, rank_by)[1:])

    passing = sorted(verdict.passing, key=order)
    rec = Recommendation(
        choice=passing[0] if passing else None,
        rank_by=rank_by,
        passing=passing,
        candidates=len(verdict.candidates),
        pareto=pareto_front(result),
        intervals=intervals,
        margin=policy.rank_margin,
        confidence=confidence,
        decide=decide,
    )
    if passing:
        _break_ties(result, rec)
        rec.held_back = _held_back(verdict, rec)
    if len(passing) > 1:
        rec.runner_up = next(r for r in passing if r is not rec.choice)
    if not passing:
        counts: Counter[str] = Counter()
        for row in verdict.candidates:
            if row.cell.status != "ok":
                counts["not_run"] += 1
                continue
            for o in row.outcomes:
                if o.status in (FAIL, NOT_MEASURED, INCONCLUSIVE):
                    counts[o.key] += 1
        rec.blockers = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return rec


def _held_back(verdict: PolicyVerdict, rec: Recommendation) -> list[tuple[CellChecks, list[CheckOutcome]]]:
    """Candidates whose only non-passing checks are inconclusive and whose ranking figure beats the choice's."""
    assert rec.choice is not None
    chosen = rank_value(rec.choice.cell, rec.rank_by)
    out = []
    for row in verdict.candidates:
        open_checks = [o for o in row.outcomes if o.status not in (PASS, NOT_APPLICABLE)]
        if row.cell.status != "ok" or not open_checks or any(o.status != INCONCLUSIVE for o in open_checks):
            continue
        value = rank_value(row.cell, rec.rank_by)
        if value is None or chosen is None:
            continue
        if (value > chosen) if rec.rank_by == "throughput_ips" else (value < chosen):
            out.append((row, open_checks))
    return out


def _break_ties(result: RunResult, rec: Recommendation) -> None:
    """Judge every passing cell against the best, choose among the tied by TIE_RULE, and say whether it is decided."""
    best = rec.best = rec.passing[0]

    def tie_key(row: CellChecks) -> tuple[float, float, tuple[float, float, str]]:
        size = row.cell.model.size_mb if row.cell.model else float("inf")
        accuracy = (result.accuracy_of(row.cell.variant, row.cell.provider) or {}).get("accuracy")
        return (size, -(accuracy if accuracy is not None else -1.0), _rank_key(row.cell, rec.rank_by))

    judged = [
        judge_contender(
            row, ratio_to_best(row.cell, best.cell, rec.rank_by, rec.confidence), rec.margin, rec.confidence
        )
        for row in rec.passing[1:]
    ]
    tied = sorted([best, *(c.row for c in judged if c.verdict == TIED)], key=tie_key)
    rec.choice = tied[0]
    if len(tied) > 1:
        rec.tied, rec.rule = tied, TIE_RULE
    lower = 1.0 / (1.0 + rec.margin)
    rec.contenders = [
        replace(
            c,
            # settling it could change the choice: the tie rule would prefer it, or it may even be the faster one
            could_change=c.verdict == CANNOT_TELL
            and (tie_key(c.row) < tie_key(rec.choice) or c.low is None or c.low < lower),
        )
        for c in judged
    ]
    # the figures the decision rests on: the best, the choice, and every contender judged tied or slower
    deciding = [best, rec.choice, *(c.row for c in rec.contenders if c.verdict != CANNOT_TELL)]
    seen: set[tuple[str, str, int]] = set()
    for row in deciding:
        why = noisy_figure(row.cell)
        if why is not None and row.cell.key not in seen:
            seen.add(row.cell.key)
            rec.noisy.append((row, why))
    rec.status = UNDECIDED if rec.undecided or rec.noisy else DECIDED
    rec.dominated_by = _dominating(result, rec)
    rec.on_front = not rec.dominated_by


def _dominating(result: RunResult, rec: Recommendation) -> list[CellChecks]:
    """Passing cells at least as good as the choice on every objective of the policy (ranking figure, model
    size, accuracy) and better on one: when decided there are none, as a dominating cell would be tied and
    preferred by the tie rule, or faster beyond the margin."""
    assert rec.choice is not None

    def objectives(row: CellChecks) -> tuple[float | None, ...]:
        iv = rec.intervals.get(row.cell.key)
        value = iv[0] if iv is not None else rank_value(row.cell, rec.rank_by)
        rank = None if value is None else (-value if rec.rank_by == "throughput_ips" else value)
        size = row.cell.model.size_mb if row.cell.model else None
        accuracy = (result.accuracy_of(row.cell.variant, row.cell.provider) or {}).get("accuracy")
        return rank, size, None if accuracy is None else -accuracy

    mine = objectives(rec.choice)
    found = []
    for row in rec.passing:
        theirs = objectives(row)
        pairs = [(a, b) for a, b in zip(theirs, mine, strict=True) if a is not None and b is not None]
        if row is not rec.choice and pairs and all(a <= b for a, b in pairs) and any(a < b for a, b in pairs):
            found.append(row)
    return found


def replicates_to_add(rec: Recommendation) -> dict[tuple[str, str, int], int]:
    """For `bench matrix --decide`: the cells whose further replicates could settle an undecided recommendation
    (the best one and each undecided contender) → replicates to add to each this round: up to the estimated
    need, at most as many as the cell has (a round at most doubles it, then the data is looked at again)."""
    if rec.status != UNDECIDED or rec.best is None:
        return {}
    wanted: dict[tuple[str, str, int], int] = {}
    for c in rec.undecided:
        for cell in (rec.best.cell, c.row.cell):
            have = len(set(cell.sample_replicates)) or stats.MIN_GROUPS
            if c.calls_needed is not None and cell.samples_ms:
                target = max(stats.MIN_GROUPS, math.ceil(c.calls_needed / (len(cell.samples_ms) / have)))
            elif c.replicates_needed is not None and not c.too_noisy:
                target = c.replicates_needed
            else:
                target = 2 * have
            wanted[cell.key] = max(wanted.get(cell.key, 0), min(have, max(1, target - have)))
    return wanted


def is_decided(result: RunResult, policy: Policy) -> bool:
    """Whether this result's recommendation is decided (what `bench matrix --decide` stops on)."""
    return recommend(result, evaluate_policy(result, policy)).status == DECIDED


def more_replicates(result: RunResult, policy: Policy) -> dict[tuple[str, str, int], int]:
    """What `bench matrix --decide` measures next: :func:`replicates_to_add` of this result's recommendation
    (empty once it is decided)."""
    return replicates_to_add(recommend(result, evaluate_policy(result, policy)))


__all__ = [
    "CANNOT_TELL",
    "DECIDED",
    "DECIDE_MAX_ROUNDS",
    "SLOWER",
    "TIED",
    "TIE_RULE",
    "UNDECIDED",
    "Comparison",
    "Contender",
    "Recommendation",
    "compare_to_reference",
    "is_decided",
    "judge_contender",
    "more_replicates",
    "ok_cells",
    "pareto_front",
    "rank_interval",
    "rank_value",
    "ratio_to_best",
    "recommend",
    "replicates_to_add",
    "replicates_to_settle",
]
