"""Change points over each history series: E-divisive with a permutation test (Matteson & James 2014).

Why this and not a library: Apache Otava 0.8 pins numpy 2.2.0 and scipy < 1.17 and pulls the Google
BigQuery and Slack SDKs; MongoDB's signal-processing-algorithms 2.1 needs numpy < 2, Python 3.11 only and
gevent — both would downgrade what bench runs on (numpy 2.4, scipy 1.17). The method is theirs:

* **E-divisive** (Matteson, D. S. & James, N. A. (2014), "A Nonparametric Approach for Multiple Change
  Point Analysis of Multivariate Data", JASA 109(505):334–345): the split τ of a segment that maximises
  Q(τ) = m·n/(m+n) · Ê(X, Y), Ê the energy distance (exponent α = 1) between the runs before and after;
  hierarchical: the best split over all segments, then again inside the pieces.
* **Significance** by their permutation test: the runs are shuffled within each current segment, the best
  statistic taken again, p = (1 + #{shuffled ≥ observed}) / (1 + R), R = 999. A split is kept when
  p ≤ ``p_value``: 0.01 per window (Otava uses 0.001; at 0.01 the flat histories of the benchmark still
  gave far fewer false changes than the 1 per 1,000 runs allowed, and the 5 % steps were found more often).
* **Ranks**: each segment's runs are replaced by their ranks (ties broken at random) before the statistic.
  Run-to-run noise here is heavy-tailed — in the A/A runs on this machine about one run in six of a cell
  lands +50 … +100 % (a session settles in a slow state) — and on the raw figures those runs swamp a 5 %
  step (0 of 20 found with the quiet A/A noise, 1 of 20 with the twin one, against 4 and 17 on ranks;
  ``tests/benchmarks/history_changepoints.py``). On ranks the permutation distribution depends on the
  segment's length alone, so one set of R shuffles per length serves every window of every series: the
  test is exact and costs one statistic per segment.
* **Windows**, as Otava: long histories are cut into overlapping windows (``window`` runs, half
  overlapping), so the cost grows linearly with the runs and an old change cannot mask a new one; a change
  found in two windows is kept once.

Each change then gets the ratio of the medians of the runs after and before it (up to ``span`` runs each
side, stopping at the neighbouring change), a bootstrap interval over those runs, and bench.stats' verdict
rule against ``tolerance``. Neighbouring changes in the same direction within ``creep_gap`` runs are one
change spread over a commit range (a creep: ten +3 % steps), judged from the runs before the first to the
runs after the last.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.history.store import FLOOR_METRIC, StoredPoint
from bench.stats import RatioEstimate, decide, small_sample_factor

# --metric shorthands → stored metric names
METRIC_ALIASES = {
    "p50": "latency_p50_ms",
    "floor": FLOOR_METRIC,
    "p90": "latency_p90_ms",
    "p95": "latency_p95_ms",
    "p99": "latency_p99_ms",
    "mean": "latency_mean_ms",
    "throughput": "throughput_ips",
    "rss": "rss_peak_mb",
    "gpu": "gpu_process_peak_mb",
    "session": "session_create_ms",
    "auc": "roc_auc",
}
# larger is better for these (a fall is the regression); every other metric: larger is worse
HIGHER_IS_BETTER = frozenset(
    {
        "throughput_ips",
        "service_throughput_rps",
        "service_max_rate_rps",
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "average_precision",
    }
)
SERIES_FIELDS = ("machine_class", "variant", "provider", "batch_size", "perturbation", "metric")
_FILTER_KEYS = {"machine": "machine_class", "batch": "batch_size", **{f: f for f in SERIES_FIELDS}}


@dataclass(frozen=True)
class Method:
    """The detector's settings; every figure a report states comes with them."""

    p_value: float = 0.01  # a change is kept at this significance (per window; see the module's note)
    permutations: int = 999  # R: p resolves to 1/(R+1); at p 0.01, up to 9 shuffled statistics may reach it
    min_size: int = 5  # fewest runs on either side of a split
    window: int = 120  # runs per window (windows overlap by half)
    exponent: float = 1.0  # α of the energy distance, 0 < α < 2
    span: int = 30  # runs each side a change's ratio is read from, at most
    creep_gap: int = 10  # same-direction changes this close are one change (a creep)
    tolerance: float = 0.10  # a ratio beyond ±tolerance (with its interval) is a regression / improvement
    confidence: float = 0.95
    boot: int = 2000
    seed: int = 0


def resolve_metric(name: str) -> str:
    return METRIC_ALIASES.get(name, name)


# --- E-divisive ---------------------------------------------------------------------------------------


def q_statistics(x: np.ndarray, min_size: int, exponent: float = 1.0) -> np.ndarray:
    """Q(τ) of every split τ = min_size … m - min_size of each row of ``x`` (shape (B, m)), shape (B, splits).

    All splits at once from running sums of the pairwise distances: O(m²) per row. With D the distance
    matrix, the pairs inside the left part grow by twice the new run's distances to those before it, and
    the left-to-all sum by its row sum; the rest follows from the total.
    """
    b, m = x.shape
    d = np.abs(x[:, :, None] - x[:, None, :])
    if exponent != 1.0:
        d = d**exponent
    rows = d.sum(axis=2)  # (B, m): each run's distances to all
    lower = np.tril(d, -1).sum(axis=2)  # (B, m): each run's distances to the runs before it
    inside = np.concatenate([np.zeros((b, 1)), 2.0 * lower.cumsum(axis=1)], axis=1)  # ordered pairs in x[:τ]
    to_all = np.concatenate([np.zeros((b, 1)), rows.cumsum(axis=1)], axis=1)  # Σ_{i<τ} Σ_j D_ij
    tau = np.arange(min_size, m - min_size + 1)
    within_left = inside[:, tau]
    cross = to_all[:, tau] - within_left
    within_right = to_all[:, m][:, None] - 2.0 * cross - within_left
    left, right = tau.astype(float), (m - tau).astype(float)
    energy = 2.0 * cross / (left * right) - within_left / (left * (left - 1)) - within_right / (right * (right - 1))
    return left * right / m * energy


_NULL: dict[tuple[int, int, float, int, int], np.ndarray] = {}  # sorted null maxima, by segment length and method


def null_maxima(length: int, method: Method) -> np.ndarray:
    """max_τ Q(τ) of ``permutations`` random orders of the ranks 1 … length, sorted.

    On ranks (ties broken at random) the permutation distribution of a segment's statistic depends on its
    length alone, so one set of shuffles serves every segment of that length (every window of every series).
    """
    key = (length, method.min_size, method.exponent, method.permutations, method.seed)
    if key not in _NULL:
        rng = np.random.default_rng([method.seed, length])
        ranks = np.arange(1.0, length + 1.0)
        maxima = []
        for start in range(0, method.permutations, 256):
            size = min(256, method.permutations - start)
            shuffled = rng.permuted(np.tile(ranks, (size, 1)), axis=1)
            maxima.append(q_statistics(shuffled, method.min_size, method.exponent).max(axis=1))
        _NULL[key] = np.sort(np.concatenate(maxima))
    return _NULL[key]


def ranks_of(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks 1 … n of ``x``, ties broken at random: for exchangeable runs a uniformly random order, so the
    permutation test stays exact with ties too (a randomised rank test)."""
    order = np.lexsort((rng.random(x.size), x))
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1.0, x.size + 1.0)
    return ranks


def e_divisive(x: np.ndarray, method: Method, rng: np.random.Generator) -> list[tuple[int, float]]:
    """Significant change points of one window, as (index of the first run after the change, p), in order found.

    Each round takes the best split over the current segments (each segment's runs ranked within it) and
    tests it by M&J's permutation test: the runs shuffled within every segment, the best statistic over all
    segments taken again. Segments are shuffled independently, so the null CDF of that maximum is the
    product of the segments' own, each read from :func:`null_maxima`. A segment whose runs are all equal
    has nothing to split.
    """
    m = len(x)
    bounds = [0, m]
    found: list[tuple[int, float]] = []
    r = method.permutations
    allowed = math.floor(method.p_value * (r + 1) + 1e-9) - 1  # shuffled ≥ observed allowed
    if allowed < 0:
        raise ValueError(f"{r} permutations cannot show p ≤ {method.p_value}")
    while True:
        pairs = itertools.pairwise(bounds)
        segments = [(a, b) for a, b in pairs if b - a >= 2 * method.min_size and np.ptp(x[a:b]) > 0]
        best: tuple[float, int] | None = None
        lengths = []
        for a, b in segments:
            q = q_statistics(ranks_of(x[a:b], rng)[None, :], method.min_size, method.exponent)[0]
            i = int(np.argmax(q))
            lengths.append(b - a)
            if best is None or q[i] > best[0]:
                best = (float(q[i]), a + method.min_size + i)
        if best is None:
            break
        observed, tau = best
        below = 1.0  # P(every segment's shuffled maximum < observed)
        for length in lengths:
            null = null_maxima(length, method)
            below *= np.searchsorted(null, observed * (1 - 1e-9), side="left") / null.size
        exceed = round((1.0 - below) * r)  # of r shuffles, how many would reach the observed maximum
        if exceed > allowed:
            break
        found.append((tau, (1 + exceed) / (r + 1)))
        bounds = sorted([*bounds, tau])
    return found


def change_points(values: Sequence[float] | np.ndarray, method: Method) -> list[tuple[int, float]]:
    """(index, p) of the change points of a series, oldest first: E-divisive per overlapping window."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2 * method.min_size:
        return []
    w = max(method.window, 4 * method.min_size)
    starts = [0] if n <= w else [*range(0, n - w, w // 2), n - w]
    found: list[tuple[int, float]] = []
    for s in starts:
        rng = np.random.default_rng([method.seed, s])
        found += [(s + tau, p) for tau, p in e_divisive(x[s : s + w], method, rng)]
    found.sort()
    kept: list[tuple[int, float]] = []
    for tau, p in found:  # the same change seen from two windows: keep one, at its smaller p
        if kept and tau - kept[-1][0] < method.min_size:
            if p < kept[-1][1]:
                kept[-1] = (tau, p)
            continue
        kept.append((tau, p))
    return kept


# --- ratio, interval and verdict of a change ----------------------------------------------------------


def ratio_estimate(before: np.ndarray, after: np.ndarray, method: Method, seed: int = 0) -> RatioEstimate:
    """median(after) / median(before) with a percentile-bootstrap interval over the runs (log scale),
    widened for few runs as bench.stats widens one over few replicates."""
    groups = (int(before.size), int(after.size))
    if min(groups) < 3 or np.any(before <= 0) or np.any(after <= 0):
        point = float(np.median(after) / np.median(before)) if min(groups) and np.median(before) > 0 else None
        why = "n too small: fewer than 3 runs on a side" if min(groups) < 3 else "figures ≤ 0: no ratio"
        return RatioEstimate("median", point, None, None, None, "runs", groups, groups, too_small=why)
    rng = np.random.default_rng(seed)
    lb, la = np.log(before), np.log(after)
    boot_b = np.median(rng.choice(lb, size=(method.boot, lb.size)), axis=1)
    boot_a = np.median(rng.choice(la, size=(method.boot, la.size)), axis=1)
    logs = boot_a - boot_b
    alpha = (1.0 - method.confidence) / 2.0
    centre = float(np.median(logs))
    low_log, high_log = np.quantile(logs, [alpha, 1.0 - alpha])
    widen = small_sample_factor(min(groups), method.confidence)
    return RatioEstimate(
        "median",
        float(math.exp(np.median(la) - np.median(lb))),
        math.exp(centre - widen * (centre - low_log)),
        math.exp(centre + widen * (high_log - centre)),
        float(np.std(logs, ddof=1)) * widen,
        "runs",
        groups,
        groups,
        centre=math.exp(centre),
        confidence=method.confidence,
    )


def _inverted(e: RatioEstimate) -> RatioEstimate:
    """before/after: for a metric where larger is better, a fall is the 'slower' side of the rule."""
    inv = lambda v: None if v is None or v == 0 else 1.0 / v  # noqa: E731
    return RatioEstimate(
        e.statistic,
        inv(e.point),
        inv(e.high),
        inv(e.low),
        e.se_log,
        e.unit,
        e.groups,
        e.n,
        e.too_small,
        inv(e.centre),
        e.confidence,
    )


def judge(estimate: RatioEstimate, metric: str, method: Method) -> tuple[str, str]:
    """(verdict, why): regression / improvement beyond the tolerance, ``shift`` (a change inside it, its
    interval within ±tolerance) or ``inconclusive`` (the interval straddles the tolerance)."""
    higher_better = metric in HIGHER_IS_BETTER
    decision = decide(_inverted(estimate) if higher_better else estimate, method.tolerance, method.confidence, "median")
    verdict = {"same": "shift"}.get(decision.verdict, decision.verdict)
    why = decision.why
    if higher_better:
        why += " (larger is better here: judged as before/after)"
    return verdict, why


# --- series -------------------------------------------------------------------------------------------


SeriesKey = tuple[str, str, str, int, str, str]


def series_of(points: Iterable[StoredPoint]) -> dict[SeriesKey, list[StoredPoint]]:
    """Points grouped by series (machine class × variant × provider × batch × perturbation × metric), in run order."""
    out: dict[SeriesKey, list[StoredPoint]] = {}
    for p in points:
        if p.value is None or not math.isfinite(p.value):
            continue
        key = (p.machine_class, p.variant, p.provider, int(p.batch_size), p.perturbation, p.metric)
        out.setdefault(key, []).append(p)
    return out


def series_dict(key: SeriesKey) -> dict[str, Any]:
    return dict(zip(SERIES_FIELDS, key, strict=True))


def series_label(key: SeriesKey) -> str:
    machine, variant, provider, batch, perturbation, metric = key
    parts = [variant, provider, f"batch {batch}" if batch else "service", machine]
    if perturbation and perturbation != "service":
        parts.append(perturbation)
    return " · ".join(parts) + f" · {metric}"


def matches(key: SeriesKey, spec: str | None) -> bool:
    """``variant=fp32,provider=cpu,batch=1`` (globs allowed; keys variant, provider, batch, machine,
    perturbation, metric) or a glob over the series label."""
    if not spec:
        return True
    fields = series_dict(key)
    for part in (s.strip() for s in spec.split(",") if s.strip()):
        if "=" in part:
            name, _, pattern = part.partition("=")
            field = _FILTER_KEYS.get(name.strip())
            if field is None:
                raise ValueError(f"unknown series field {name.strip()!r} (one of {', '.join(sorted(_FILTER_KEYS))})")
            if not fnmatch.fnmatchcase(str(fields[field]), pattern.strip()):
                return False
        elif not fnmatch.fnmatchcase(series_label(key), f"*{part}*"):
            return False
    return True


@dataclass(frozen=True)
class Change:
    """One change (or creep) of one series, as ``bench history detect --json`` writes it."""

    series: dict[str, Any]
    metric: str
    run_id: str  # the first run after the change
    commit: str | None
    created: str
    commit_range: list[str | None]  # [last commit before, first commit after] (a creep: up to its last step)
    runs: list[str]  # the first run after each step (one for a step, several for a creep)
    index: int
    kind: str  # step | creep
    median_before: float
    median_after: float
    runs_before: int
    runs_after: int
    ratio: float | None
    ci: list[float | None]
    p_value: float
    verdict: str
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_series(key: SeriesKey, points: Sequence[StoredPoint], method: Method) -> list[Change]:
    """The changes of one series (points in run order)."""
    values = np.array([p.value for p in points], dtype=np.float64)
    cps = change_points(values, method)
    if not cps:
        return []
    bounds = [0, *[c for c, _ in cps], len(values)]

    def side(j: int) -> tuple[np.ndarray, np.ndarray]:
        c = bounds[j + 1]
        return values[max(bounds[j], c - method.span) : c], values[c : min(bounds[j + 2], c + method.span)]

    directions = []
    for j in range(len(cps)):
        before, after = side(j)
        directions.append(np.sign(np.median(after) - np.median(before)))
    episodes: list[list[int]] = []
    for j in range(len(cps)):
        if (
            episodes
            and directions[j] == directions[episodes[-1][-1]]
            and cps[j][0] - cps[episodes[-1][-1]][0] <= method.creep_gap
        ):
            episodes[-1].append(j)
        else:
            episodes.append([j])
    changes = []
    for group in episodes:
        first, last = group[0], group[-1]
        c0, c1 = cps[first][0], cps[last][0]
        before = values[max(bounds[first], c0 - method.span) : c0]
        after = values[c1 : min(bounds[last + 2], c1 + method.span)]
        estimate = ratio_estimate(before, after, method, seed=method.seed + c0)
        verdict, why = judge(estimate, key[5], method)
        changes.append(
            Change(
                series=series_dict(key),
                metric=key[5],
                run_id=points[c0].run_id,
                commit=points[c0].commit,
                created=points[c0].created,
                commit_range=[points[c0 - 1].commit, points[c1].commit],
                runs=[points[cps[j][0]].run_id for j in group],
                index=c0,
                kind="creep" if len(group) > 1 else "step",
                median_before=float(np.median(before)),
                median_after=float(np.median(after)),
                runs_before=int(before.size),
                runs_after=int(after.size),
                ratio=estimate.point,
                ci=[estimate.low, estimate.high],
                p_value=max(cps[j][1] for j in group),
                verdict=verdict,
                why=why,
            )
        )
    return changes


def detect(points: Iterable[StoredPoint], method: Method | None = None, series: str | None = None) -> dict[str, Any]:
    """``bench history detect``'s report: every change of every series that ``series`` matches."""
    method = method or Method()
    grouped = {k: v for k, v in series_of(points).items() if matches(k, series)}
    changes = [c for key in sorted(grouped, key=str) for c in detect_series(key, grouped[key], method)]
    runs = {p.run_id for pts in grouped.values() for p in pts}
    return {
        "change_points": [c.as_dict() for c in changes],
        "series": len(grouped),
        "runs": len(runs),
        "method": {"name": "e-divisive", "reference": "Matteson & James 2014", **asdict(method)},
        "regressions": sum(c.verdict == "regression" for c in changes),
    }


__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_ALIASES",
    "Change",
    "Method",
    "change_points",
    "detect",
    "detect_series",
    "e_divisive",
    "judge",
    "matches",
    "q_statistics",
    "ratio_estimate",
    "resolve_metric",
    "series_label",
    "series_of",
]
