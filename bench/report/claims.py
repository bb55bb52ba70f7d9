"""Claims: the hand-written report's quantitative statements, each judged on the measurements with a tolerance.

A claims file (TOML, ``[[claim]]`` tables; the built-in one, ``claims.toml``, holds the seed report's) says
for each claim which figure answers it, the stated figure (``limit``), and which measured cell or service entry
to read it from (the first of ``variants`` × ``providers`` × ``batch_sizes``, in that order of preference, that
ran). Each claim also has an **accepted range**: set in the file (``min``/``max``, or ``tolerance = "5%"``), or
read from its own words — "about"/"~"/"≈" ±5 %, "2–3×" the range, "under"/"within"/"≤" a one-sided bound,
"50 % less/smaller" 0.5 ± 5 % — and otherwise the check's direction (``max_…`` ≤, ``min_…`` ≥).

The answer is decided on the figure's 95 % interval (latency quantiles: bench.stats' two-level bootstrap over
the replicates; speed-ups: the ratio interval; accuracy: the recorded ``accuracy_ci``): ✅ when the interval
lies inside the accepted range, ❌ when it lies wholly outside, **inconclusive** otherwise, saying what would
decide it. Exact figures (file sizes, status codes, counts) are their own interval; figures with no interval
(memory peaks, GPU utilisation, the service's figures from files without samples) are judged on the value, and
the report says so. A timing figure measured on a noisy or contended cell decides nothing (inconclusive). A
claim about a GPU is answered only by a GPU cell or a GPU-served service; a claim about a specific model or
data set (the model card's accuracy) is "not comparable here" unless the run's model sha256 and data set
fingerprint are the ones the claims file names. "Not measurable here" says why (no GPU, no PyTorch row, no
service run); a claim is never ✅ on a figure that was not measured. Cell figures come from the release
policy's own measuring functions (:mod:`bench.report.policy`), so a claim and a check can never disagree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np

from bench import stats
from bench.errors import InputError
from bench.load.verdicts import LEAK_FLOOR_MB, LEAK_FRACTION
from bench.noise import noisy_figure
from bench.providers import is_gpu
from bench.report.policy import (
    CHECKS,
    PREVIOUS,
    RELATIVE_CHECKS,
    Figure,
    Policy,
    load_previous,
    measure_check,
    read_toml,
    reference_row,
    relative_figure,
)
from bench.results import CellResult, ClaimsRecord, RunResult, ServiceEntry

DEFAULT_CLAIMS = Path(__file__).with_name("claims.toml")

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
NOT_MEASURABLE, NOT_COMPARABLE = "not_measurable", "not_comparable"
STATUSES = (PASS, FAIL, INCONCLUSIVE, NOT_COMPARABLE, NOT_MEASURABLE)

# Figures only a claim reads (key → (unit, direction)); direction "range" takes limit = [low, high], "eq" one value.
CELL_MEASURES: dict[str, tuple[str, str]] = {
    "gpu_util_mean_pct": ("%", "range"),  # GPU utilisation, mean over the timed loop
    "max_mean_ms": ("ms", "max"),  # per-call mean latency; interval: bootstrap over the replicates
    "max_std_ms": ("ms", "max"),  # per-call standard deviation; likewise
    "max_system_ram_pct": ("%", "max"),  # the machine's RAM in use at the cell's peak, every process counted
}
SERVICE_MEASURES: dict[str, tuple[str, str]] = {
    "max_service_p50_ms": ("ms", "max"),  # /detect end to end under the open-loop load, p50
    "max_service_p99_ms": ("ms", "max"),  # the same, p99
    "max_batch_ms_per_image": ("ms", "max"),  # /detect/batch: request p50 ÷ files per request
    "health_status": ("", "eq"),  # GET /health status code once the model was ready
    "metrics_status": ("", "eq"),  # GET /metrics status code (the service record's ``metrics`` probe)
    "no_leak": ("MB/min", "max"),  # limit: the memory growth the claim tolerates, MB per minute
    "concurrent_requests": ("", "min"),  # requests in flight on average (Little's law) under a load with no error
    "invalid_inputs": ("", "all"),  # bad uploads answered with the expected 4xx status, of all sent
}
# Figures that other processes' CPU use moves: measured on a noisy or contended cell, they decide nothing.
TIMING_CHECKS = frozenset(
    {
        "max_p99_ms",
        "max_p99_ms_per_image",
        "min_throughput_ips",
        "min_speedup_p50",
        "max_mean_ms",
        "max_std_ms",
        "gpu_util_mean_pct",
        "max_service_p50_ms",
        "max_service_p99_ms",
        "max_batch_ms_per_image",
        "concurrent_requests",
    }
)
GPU_CHECKS = frozenset({"max_gpu_memory_mb", "gpu_util_mean_pct"})  # claims about a GPU whatever the file says
SPECIFIC_BY_DEFAULT: dict[str, tuple[str, ...]] = {"min_accuracy_pct": ("model", "dataset")}
APPROX = 0.05  # "about", "~", "≈", "50 % less": ±5 % unless the claim says otherwise
CLAIM_KEYS = frozenset(
    {
        "id",
        "text",
        "seed",
        "check",
        "limit",
        "variants",
        "providers",
        "batch_sizes",
        "relative_to",
        "results",
        "tolerance",
        "min",
        "max",
        "gpu",
        "specific_to",
        "model_sha256",
        "dataset_fingerprint",
    }
)
FINGERPRINT_KEYS = ("model_sha256", "dataset_fingerprint")  # also at the top of a file: every claim's default


def claim_checks() -> dict[str, tuple[str, str]]:
    """Every check a claim may name, with its unit and direction."""
    return {**CHECKS, **RELATIVE_CHECKS, **CELL_MEASURES, **SERVICE_MEASURES}


# --- the accepted range ---------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
_RANGE = re.compile(_NUM + r"\s*(?:–|—|-|to)\s*" + _NUM + r"\s*(×|x\b|%|ms\b)", re.IGNORECASE)
_LESS = re.compile(_NUM + r"\s*%\s*(?:less|smaller|lower|fewer)\b", re.IGNORECASE)
_ABOUT = re.compile(r"(?:\b(?:about|around|approximately|roughly)\s+|[~≈]\s*)\d", re.IGNORECASE)
_UPPER = re.compile(
    r"(?:\b(?:under|within|below|at most|no more than|less than|up to)\s+(?:the\s+)?|[≤<]=?\s*)[~≈]?\d", re.IGNORECASE
)
_LOWER = re.compile(r"(?:\b(?:at least|over|above|more than|no less than)\s+|[≥>]=?\s*)\d", re.IGNORECASE)
_WORDED_UNITS = {"×": "×", "x": "×", "%": "%", "ms": "ms"}


@dataclass(frozen=True)
class Accepted:
    """The values a claim accepts, ``low`` ≤ x ≤ ``high`` (None: unbounded), and where the range came from:
    ``basis`` file (min/max) · tolerance (the file's, applied to the claim's shape) · about · less (N % less) ·
    range (the words' range) · about_range · bound (under/at least …) · check (the check's direction)."""

    low: float | None
    high: float | None
    basis: str
    tolerance: float | None = None  # the width applied: a fraction when ``relative``, else in the check's unit
    relative: bool = True

    def judge(self, low: float, high: float) -> str:
        """✅ when [low, high] lies inside, ❌ when wholly outside, inconclusive otherwise."""
        if (self.low is None or low >= self.low) and (self.high is None or high <= self.high):
            return PASS
        if (self.low is not None and high < self.low) or (self.high is not None and low > self.high):
            return FAIL
        return INCONCLUSIVE

    def crossed(self, value: float, low: float, high: float) -> float | None:
        """The bound an interval straddles (the one nearest the value when it straddles both)."""
        inside = [b for b in (self.low, self.high) if b is not None and low < b < high]
        return min(inside, key=lambda b: abs(value - b)) if inside else None


def parse_tolerance(where: str, value: Any) -> tuple[float, bool]:
    """``"5%"`` → (0.05, relative); ``0.5`` or ``"0.5 ms"`` → (0.5, absolute, in the check's unit)."""
    if _is_number(value) and value >= 0:
        return float(value), False
    match = re.fullmatch(r"\s*" + _NUM + r"\s*(%|[a-zA-Z/×]+)?\s*", str(value)) if isinstance(value, str) else None
    if match is None:
        raise InputError(f'{where}: tolerance must be "5%" (relative) or a number in the check\'s unit, got {value!r}')
    number = float(match[1])
    return (number / 100.0, True) if match[2] == "%" else (number, False)


def _widen(low: float | None, high: float | None, width: float, relative: bool) -> tuple[float | None, float | None]:
    def by(x: float) -> float:
        return abs(x) * width if relative else width

    return (None if low is None else low - by(low)), (None if high is None else high + by(high))


def accepted_range(
    check: str,
    limit: float | tuple[float, float],
    wording: str,
    tolerance: tuple[float, bool] | None = None,
    low: float | None = None,
    high: float | None = None,
) -> Accepted:
    """The accepted range of a claim: the file's ``min``/``max``; else the shape its words give (a range,
    "N % less", "about", a bound; else the check's direction), as wide as ``tolerance`` or the words' default."""
    if low is not None or high is not None:
        return Accepted(low, high, "file")
    unit, direction = claim_checks()[check]
    approx = bool(_ABOUT.search(wording))
    width, relative = tolerance if tolerance is not None else (None, True)
    worded = _RANGE.search(wording)
    if isinstance(limit, tuple) or (worded and _WORDED_UNITS.get(worded[3].lower()) == unit):
        lo, hi = limit if isinstance(limit, tuple) else (float(worded[1]), float(worded[2]))  # type: ignore[index]
        if width is None:
            width, basis = (APPROX if approx else 0.0), ("about_range" if approx else "range")
        else:
            basis = "tolerance"
        return Accepted(*_widen(lo, hi, width, relative), basis, width or None, relative)
    if (unit == "×" and _LESS.search(wording)) or approx:
        basis = "tolerance" if width is not None else ("about" if approx else "less")
        width = APPROX if width is None else width
        return Accepted(*_widen(limit, limit, width, relative), basis, width, relative)
    # The words' bound ("under 10 ms", "at least 2×") names the check's own direction; it never turns it
    # round ("no leak over 30 s" is no lower bound on a leak).
    worded_bound = {"max": _UPPER, "min": _LOWER}.get(direction)
    basis = "bound" if worded_bound is not None and worded_bound.search(wording) else "check"
    lo_hi = {"max": (None, limit), "min": (limit, None), "all": (limit, None)}.get(direction, (limit, limit))
    if width:
        return Accepted(*_widen(*lo_hi, width, relative), "tolerance", width, relative)
    return Accepted(*lo_hi, basis)


# --- claims files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One statement of the hand-written report and how to check it."""

    id: str
    text: dict[str, str]  # language → the claim as the report states it
    check: str
    limit: float | tuple[float, float]
    accepted: Accepted
    variants: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    relative_to: str | None = None  # relative checks: a variant of this run, or "previous"
    results: str | None = None  # relative_to = "previous": the earlier results file
    seed: str = ""  # where the hand-written report says it
    gpu: bool = False  # a claim about a GPU: only a GPU cell (or a GPU-served service) answers it
    specific_to: tuple[str, ...] = ()  # "model", "dataset": comparable only on the named fingerprints
    model_sha256: tuple[str, ...] = ()
    dataset_fingerprint: tuple[str, ...] = ()

    def text_in(self, lang: str) -> str:
        return self.text.get(lang) or self.text.get("en") or self.id

    @property
    def unit(self) -> str:
        return claim_checks()[self.check][0]

    @property
    def direction(self) -> str:
        return claim_checks()[self.check][1]


@dataclass
class ClaimOutcome:
    """A claim's answer: status, the measured value (None when not measurable, with ``why``/``detail``), its
    95 % interval and how it was judged (``basis``: interval · exact · point, i.e. no interval exists · none, an
    estimate too small for one), what it was measured on, why a timing figure is noisy, and the facts the
    report states beside the value (reference row, memory kind, what would decide an inconclusive claim, …)."""

    claim: Claim
    status: str
    value: float | None = None
    interval: tuple[float, float] | None = None
    cell: CellResult | None = None
    service: ServiceEntry | None = None
    why: str | None = None
    detail: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    basis: str | None = None
    noisy: str | None = None


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple[Claim, ...]
    source: str | None = None  # the file; None = the built-in seed claims
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as read: recorded in the run's config

    def to_config(self) -> ClaimsRecord:
        """What ``bench matrix`` records (config.claims), so ``bench report`` answers the same claims later; the
        file's own fingerprints are copied into each claim that does not name its own."""
        shared = {k: self.raw[k] for k in FINGERPRINT_KEYS if k in self.raw}
        return {"source": self.source, "claim": [{**shared, **c} for c in self.raw.get("claim", [])]}


def load_claims(path: str | Path | None = None) -> ClaimSet:
    """Read a claims file (the built-in seed claims when ``path`` is None); a bad file is an input error."""
    data = read_toml(DEFAULT_CLAIMS if path is None else Path(path), "claims")
    return parse_claims(data, None if path is None else str(path))


def parse_claims(data: Mapping[str, Any], source: str | None = None) -> ClaimSet:
    """Claims from parsed TOML (or the copy a run recorded in its config)."""
    where = source or DEFAULT_CLAIMS.name
    items = data.get("claim")
    if not isinstance(items, list) or not items:
        raise InputError(f"{where}: no [[claim]] tables (each: id, text.en, check, limit; see {DEFAULT_CLAIMS.name})")
    unknown = sorted(set(data) - {"claim", "source", *FINGERPRINT_KEYS})
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (a file holds [[claim]] tables and {FINGERPRINT_KEYS})")
    shared = {k: data[k] for k in FINGERPRINT_KEYS if k in data}
    claims = tuple(_claim(where, i, item, shared) for i, item in enumerate(items))
    ids = [c.id for c in claims]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(f"{where}: claim ids must be unique, got {', '.join(twice)} more than once")
    return ClaimSet(claims, source, data)


def _claim(where: str, index: int, item: Any, shared: Mapping[str, Any]) -> Claim:
    if not isinstance(item, dict):
        raise InputError(f"{where}: claim {index + 1} must be a table")
    name = str(item.get("id") or f"#{index + 1}")
    here = f"{where}: claim {name}"
    unknown = sorted(set(item) - CLAIM_KEYS)
    if unknown:
        raise InputError(f"{here}: unknown key {unknown[0]!r}; a claim takes {', '.join(sorted(CLAIM_KEYS))}")
    known = claim_checks()
    check = item.get("check")
    if check not in known:
        raise InputError(f"{here}: check must be one of {', '.join(known)}, got {check!r}")
    text = item.get("text")
    if isinstance(text, str):
        text = {"en": text}
    if not isinstance(text, dict) or not text.get("en"):
        raise InputError(f'{here}: needs text.en = "the claim as stated"')
    low, high = (_bound(here, key, item.get(key)) for key in ("min", "max"))
    limit = _limit(here, check, item.get("limit"), low, high)
    tolerance = None if item.get("tolerance") is None else parse_tolerance(here, item["tolerance"])
    relative_to = item.get("relative_to")
    if check in RELATIVE_CHECKS and not relative_to:
        raise InputError(f'{here}: {check} needs relative_to = "fp32" (a variant) or "previous"')
    if relative_to == PREVIOUS and not item.get("results"):
        raise InputError(f'{here}: relative_to = "previous" needs results = "path/results.json"')
    lists = {key: _list(here, key, item.get(key, [])) for key in ("variants", "providers", "batch_sizes")}
    gpu = item.get("gpu", check in GPU_CHECKS)
    if not isinstance(gpu, bool):
        raise InputError(f"{here}: gpu must be true or false, got {gpu!r}")
    specific = _list(here, "specific_to", item.get("specific_to", list(SPECIFIC_BY_DEFAULT.get(check, ()))))
    if any(s not in ("model", "dataset") for s in specific):
        raise InputError(f'{here}: specific_to takes "model" and/or "dataset", got {list(specific)!r}')
    return Claim(
        id=name,
        text={str(k): str(v) for k, v in text.items()},
        check=check,
        limit=limit,
        accepted=accepted_range(check, limit, str(text["en"]), tolerance, low, high),
        relative_to=None if relative_to is None else str(relative_to),
        results=item.get("results"),
        seed=str(item.get("seed") or ""),
        gpu=gpu,
        specific_to=tuple(str(s) for s in specific),
        model_sha256=_strings(here, "model_sha256", item.get("model_sha256", shared.get("model_sha256"))),
        dataset_fingerprint=_strings(
            here, "dataset_fingerprint", item.get("dataset_fingerprint", shared.get("dataset_fingerprint"))
        ),
        **lists,
    )


def _limit(here: str, check: str, limit: Any, low: float | None, high: float | None) -> float | tuple[float, float]:
    direction = claim_checks()[check][1]
    if limit is None and (low is not None or high is not None):
        return (low if low is not None else -math.inf, high if high is not None else math.inf)
    if limit is None and direction == "all":
        return 1.0
    if isinstance(limit, list):
        if len(limit) == 2 and all(_is_number(v) for v in limit) and limit[0] <= limit[1]:
            return float(limit[0]), float(limit[1])
        raise InputError(f"{here}: limit must be [low, high] (low ≤ high) or a number, got {limit!r}")
    if direction == "range":
        raise InputError(f"{here}: limit must be [low, high] for {check}")
    if not _is_number(limit):
        raise InputError(f"{here}: limit must be a number, got {limit!r}")
    return float(limit)


def _bound(here: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise InputError(f"{here}: {key} must be a number (the accepted range's {key}imum), got {value!r}")
    return float(value)


def _list(here: str, key: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise InputError(f"{here}: {key} must be a list, got {value!r}")
    return tuple(value)


def _strings(here: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise InputError(f"{here}: {key} must be a string or a list of strings, got {value!r}")
    return tuple(v.lower() for v in values)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def claims_for(result: RunResult, override: str | Path | None = None) -> ClaimSet:
    """The claims to answer: ``override``, else the claims file recorded in the run, else the built-in seed claims
    as they are now (a run that answered the built-in ones gets their current tolerances and GPU marks)."""
    if override is not None:
        return load_claims(override)
    recorded = result.config.get("claims")
    if isinstance(recorded, dict) and recorded.get("claim") and recorded.get("source"):
        return parse_claims(recorded, recorded.get("source"))
    return load_claims(None)


# --- measured figures and their intervals ---------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One figure as a claim judges it: value, 95 % interval, ``basis`` (interval · exact · point · none), what
    its interval resampled (``groups`` of ``unit``: replicates, calls, images, requests) and, for basis none,
    the facts saying what an interval would need."""

    value: float
    interval: tuple[float, float] | None = None
    basis: str = "interval"
    groups: int | None = None
    unit: str = "replicates"
    needs: dict[str, Any] = field(default_factory=dict)


def replicate_interval(cell: CellResult, statistic: str, n_boot: int = 2000, seed: int = 0) -> Measured | None:
    """The mean or standard deviation of a cell's calls with a 95 % interval from resampling whole replicates.

    Replicates (fresh sessions) are the unit that varies, so each resample draws replicates with replacement
    and pools their calls (a cluster bootstrap: the within-replicate spread comes along); the interval is
    widened for few replicates as bench.stats widens its quantile intervals. None without samples.
    """
    if len(cell.samples_ms) < 2:
        return None
    groups, unit = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    x = np.asarray(cell.samples_ms, dtype=np.float64)
    value = float(x.mean() if statistic == "mean" else x.std(ddof=1))
    have = {"statistic": statistic, "calls": int(x.size), "groups": len(groups), "unit": unit}
    if x.size < stats.MIN_SAMPLES or len(groups) < stats.MIN_GROUPS:
        needs = {**have, "need_calls": stats.MIN_SAMPLES, "need_groups": stats.MIN_GROUPS}
        return Measured(value, None, "none", needs=needs)
    n = np.array([g.size for g in groups], dtype=np.float64)
    s1 = np.array([g.sum() for g in groups])
    s2 = np.array([(g * g).sum() for g in groups])
    picks = np.random.default_rng(seed).integers(0, len(groups), size=(n_boot, len(groups)))
    count, total, squares = n[picks].sum(1), s1[picks].sum(1), s2[picks].sum(1)
    mean = total / count
    draws = mean if statistic == "mean" else np.sqrt(np.maximum(squares - count * mean**2, 0.0) / (count - 1))
    if (draws <= 0).any():
        return Measured(value, None, "none", needs={**have, "degenerate": True})
    logs = np.log(draws)
    centre = float(np.median(logs))
    low, high = np.quantile(logs, [0.025, 0.975])
    widen = stats.small_sample_factor(len(groups))
    interval = (math.exp(centre - widen * (centre - low)), math.exp(centre + widen * (high - centre)))
    return _resampled(value, interval, len(groups), unit, int(x.size))


def _resampled(value: float, interval: tuple[float, float], groups: int, unit: str, calls: int) -> Measured:
    """More replicates decide; for files without replicate ids (contiguous blocks), more calls."""
    if unit == "replicates":
        return Measured(value, interval, "interval", groups, "replicates")
    return Measured(value, interval, "interval", calls, "calls")


def quantile_figure(cell: CellResult, statistic: str, value: float, per: float = 1.0) -> Measured:
    """A latency quantile (÷ ``per``: the batch size for per-image figures) with CellResult.latency_interval."""
    groups, unit = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    est = cell.latency_interval(statistic) if cell.samples_ms else None
    if est is None:
        q = stats.statistic_of(statistic)
        needs = {
            "statistic": statistic,
            "calls": len(cell.samples_ms),
            "groups": len(groups),
            "unit": unit,
            "need_calls": stats.min_samples(q),
            "need_groups": stats.MIN_GROUPS,
        }
        return Measured(value, None, "none", needs=needs)
    return _resampled(value, (est[1] / per, est[2] / per), len(groups), unit, len(cell.samples_ms))


def _cell_measured(claim: Claim, cell: CellResult, figure: Figure, result: RunResult) -> Measured:
    """The figure with its interval, or how it is judged without one (see :class:`Measured`)."""
    assert figure.value is not None
    value, check = figure.value, claim.check
    if figure.interval is not None:  # the policy's own interval (speed-up; accuracy where it records one)
        if check == "min_speedup_p50":
            ref, _ = reference_row(cell, claim.relative_to or "", result, None)
            sides = [c for c in (cell, ref) if c is not None]
            groups = min(len(stats.replicate_groups(c.samples_ms, c.sample_replicates or None)[0]) for c in sides)
            return Measured(value, figure.interval, "interval", groups, "replicates")
        n = (result.accuracy_of(cell.variant, cell.provider) or {}).get("n")
        return Measured(value, figure.interval, "interval", n, "images")
    if check in ("max_size_ratio", "max_model_mb"):
        return Measured(value, (value, value), "exact")
    if check in ("max_p99_ms", "max_p99_ms_per_image"):
        return quantile_figure(cell, "p99", value, cell.batch_size if check == "max_p99_ms_per_image" else 1.0)
    if check in ("max_mean_ms", "max_std_ms", "min_throughput_ips"):
        measured = replicate_interval(cell, "std" if check == "max_std_ms" else "mean")
        if measured is None:
            return Measured(value, None, "none", needs={"statistic": "mean", "calls": 0})
        if check != "min_throughput_ips" or measured.interval is None:
            return Measured(value, measured.interval, measured.basis, measured.groups, measured.unit, measured.needs)
        low, high = (cell.batch_size * 1000.0 / ms for ms in reversed(measured.interval))
        return Measured(value, (low, high), "interval", measured.groups, measured.unit)
    if check in ("min_accuracy_pct", "max_accuracy_drop_pt"):
        acc = result.accuracy_of(cell.variant, cell.provider) or {}
        ci = cast(Mapping[str, Any], acc).get("accuracy_ci") if check == "min_accuracy_pct" else None
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
            return Measured(value, (ci[0] * 100.0, ci[1] * 100.0), "interval", acc.get("n"), "images")
        return Measured(value, None, "none", needs={"no_ci": True})
    return Measured(value, None, "point")  # memory peaks, memory ratios, GPU utilisation, system RAM


# --- answering ------------------------------------------------------------------------------------


def evaluate_claims(result: RunResult, claims: ClaimSet, policy: Policy) -> list[ClaimOutcome]:
    """Each claim's answer from ``result`` (service claims from ``result.service``)."""
    previous: dict[str, RunResult | None] = {}
    out = []
    for claim in claims.claims:
        if claim.check in SERVICE_MEASURES:
            out.append(_service_claim(claim, result))
            continue
        prev = None
        if claim.relative_to == PREVIOUS and claim.results:
            if claim.results not in previous:
                previous[claim.results] = load_previous(claim.results, claims.source)
            prev = previous[claim.results]
        out.append(_cell_claim(claim, result, policy, prev))
    return out


def _matches(claim: Claim, cell: CellResult) -> bool:
    return (
        (not claim.variants or cell.variant in claim.variants)
        and (not claim.providers or cell.provider in claim.providers)
        and (not claim.batch_sizes or cell.batch_size in claim.batch_sizes)
    )


def _preference(claim: Claim, cell: CellResult) -> tuple[int, int, int]:
    def rank(values: tuple[Any, ...], value: Any) -> int:
        return values.index(value) if value in values else 0

    return (
        rank(claim.variants, cell.variant),
        rank(claim.providers, cell.provider),
        rank(claim.batch_sizes, cell.batch_size),
    )


def _cell_claim(claim: Claim, result: RunResult, policy: Policy, previous: RunResult | None) -> ClaimOutcome:
    planned = sorted((c for c in result.cells if _matches(claim, c)), key=lambda c: _preference(claim, c))
    if claim.gpu:  # never judged on a CPU cell (ORT emulates fp16 there, for one)
        if not any(is_gpu(c.provider) for c in result.cells):
            return _no_gpu_cell(claim, result, sorted({c.provider for c in result.cells}))
        planned = [c for c in planned if is_gpu(c.provider)]
    ran = [c for c in planned if c.status == "ok"]
    if not planned:
        return ClaimOutcome(claim, NOT_MEASURABLE, why="claim_not_planned", detail=_selection(claim))
    if not ran and claim.check != "max_size_ratio":
        return _not_run(claim, result, planned[0])
    figure, cell = None, None
    for cell in ran or planned:  # the first preferred cell whose figure exists
        figure = _cell_figure(claim, cell, result, policy, previous)
        if figure.value is not None:
            break
    assert figure is not None and cell is not None
    facts: dict[str, Any] = {}
    if claim.relative_to:
        facts["reference"] = claim.relative_to
    if figure.why in ("memory_rss", "memory_gpu"):
        facts["memory"] = figure.why
    if claim.check in ("min_accuracy_pct", "max_accuracy_drop_pt"):
        facts["n"] = (result.accuracy_of(cell.variant, cell.provider) or {}).get("n")
    if figure.value is None:
        if figure.why == "not_run":
            return _not_run(claim, result, cell)
        return ClaimOutcome(claim, NOT_MEASURABLE, cell=cell, why=figure.why, detail=figure.detail, facts=facts)
    noisy = None
    if claim.check in TIMING_CHECKS:
        sides = [cell]
        if claim.relative_to and claim.relative_to != PREVIOUS:
            sides.append(reference_row(cell, claim.relative_to, result, previous)[0] or cell)
        noisy = "; ".join(dict.fromkeys(w for c in sides if (w := noisy_figure(c)))) or None
    sha = cell.model.sha256 if cell.model else None
    outcome = judged(claim, _cell_measured(claim, cell, figure, result), noisy, facts, cell=cell)
    return _comparable(outcome, sha, (result.dataset or {}).get("fingerprint"))


def judged(
    claim: Claim,
    measured: Measured,
    noisy: str | None,
    facts: dict[str, Any],
    cell: CellResult | None = None,
    service: ServiceEntry | None = None,
) -> ClaimOutcome:
    """A measured figure's verdict on the claim's accepted range (module docstring), and why when inconclusive."""
    m = measured
    out = ClaimOutcome(claim, INCONCLUSIVE, m.value, m.interval, cell, service, facts=facts, basis=m.basis, noisy=noisy)
    if m.basis == "none":
        out.why, out.facts = "no_interval", {**facts, **m.needs}
    else:
        low, high = m.interval or (m.value, m.value)
        out.status = claim.accepted.judge(low, high)
        if out.status == INCONCLUSIVE:
            out.why, out.facts = "straddles", {**facts, **to_decide(claim.accepted, m)}
    if noisy and out.status in (PASS, FAIL, INCONCLUSIVE):
        out.status, out.why, out.detail = INCONCLUSIVE, "noisy", noisy
    return out


def to_decide(accepted: Accepted, m: Measured) -> dict[str, Any]:
    """For an interval straddling a bound: the bound, the smallest margin from it this measurement resolves
    (``mde``, a fraction of the bound, at 80 % power) and how many ``unit`` would decide it if the value held
    (the half-width shrinks as 1/√n of the unit that varies: replicates, as in bench.stats)."""
    assert m.interval is not None
    low, high = m.interval
    value = min(max(m.value, low), high)
    bound = accepted.crossed(value, low, high)
    if bound is None:
        return {}
    z, power = 1.96, 0.8416
    logs = low > 0 and bound > 0
    scale: Any = math.log if logs else (lambda x: x)
    half = (scale(high) - scale(low)) / 2.0
    distance = abs(scale(value) - scale(bound))
    if logs:
        mde: float | None = math.exp(half * (z + power) / z) - 1.0
    else:
        mde = half * (z + power) / z / abs(bound) if bound else None
    needed = math.ceil((m.groups or 0) * (half / distance) ** 2) if distance > 0 and m.groups else None
    practical = needed is not None and needed <= stats.PRACTICAL_FACTOR * (m.groups or 0)
    return {"bound": bound, "mde": mde, "needed": needed, "have": m.groups, "unit": m.unit, "practical": practical}


def _comparable(outcome: ClaimOutcome, model_sha: str | None, dataset: str | None) -> ClaimOutcome:
    """The outcome as "not comparable here" when the claim is about a model or data set this run did not measure."""
    claim = outcome.claim
    for kind, named, have in (
        ("model", claim.model_sha256, model_sha),
        ("dataset", claim.dataset_fingerprint, dataset),
    ):
        if kind not in claim.specific_to:
            continue
        if not named:
            outcome.status, outcome.why, outcome.detail = NOT_COMPARABLE, f"{kind}_unnamed", None
            return outcome
        if (have or "").lower() not in named:
            outcome.status, outcome.why = NOT_COMPARABLE, f"{kind}_differs"
            outcome.detail = None
            outcome.facts = {**outcome.facts, "have": (have or "—")[:12], "want": named[0][:12]}
            return outcome
    return outcome


def _cell_figure(
    claim: Claim, cell: CellResult, result: RunResult, policy: Policy, previous: RunResult | None
) -> Figure:
    if claim.check in RELATIVE_CHECKS:
        assert claim.relative_to is not None
        return relative_figure(claim.check, claim.relative_to, cell, result, previous, claim.results)
    if claim.check in CELL_MEASURES:
        if cell.status != "ok":
            return Figure(None, "not_run", cell.status)
        memory = cell.memory or {}
        if claim.check == "gpu_util_mean_pct":
            value = memory.get("gpu_util_mean_pct")
            return Figure(value, None if value is not None else "gpu_not_sampled", memory.get("gpu_reason"))
        if claim.check == "max_system_ram_pct":
            value = memory.get("system_ram_peak_pct")
            return Figure(value, None if value is not None else "no_rss")
        if len(cell.samples_ms) < 2:
            return Figure(None, "no_latency")
        x = np.asarray(cell.samples_ms, dtype=np.float64)
        return Figure(float(x.std(ddof=1) if claim.check == "max_std_ms" else x.mean()))
    return measure_check(claim.check, cell, result, policy)


def _no_gpu_cell(claim: Claim, result: RunResult, providers: list[str]) -> ClaimOutcome:
    if not result.environment.get("gpu"):
        return ClaimOutcome(claim, NOT_MEASURABLE, why="no_gpu_here", detail=result.environment.get("gpu_reason"))
    return ClaimOutcome(claim, NOT_MEASURABLE, why="gpu_only", detail=", ".join(providers))


def _not_run(claim: Claim, result: RunResult, cell: CellResult) -> ClaimOutcome:
    """Not measurable because the cell that answers it did not run: "no GPU here" when that is why."""
    if is_gpu(cell.provider) and not result.environment.get("gpu"):
        return ClaimOutcome(
            claim, NOT_MEASURABLE, cell=cell, why="no_gpu_here", detail=result.environment.get("gpu_reason")
        )
    return ClaimOutcome(claim, NOT_MEASURABLE, cell=cell, why="cell_not_run", detail=cell.reason or cell.status)


def _selection(claim: Claim) -> str:
    parts = [", ".join(map(str, v)) for v in (claim.variants, claim.providers, claim.batch_sizes) if v]
    return " · ".join(parts) or "any cell"


# --- service claims -------------------------------------------------------------------------------


def _service_claim(claim: Claim, result: RunResult) -> ClaimOutcome:
    if not result.service:
        return ClaimOutcome(claim, NOT_MEASURABLE, why="no_service")
    entries = [e for e in result.service if not claim.variants or e.get("variant") in claim.variants]
    entries.sort(key=lambda e: claim.variants.index(e["variant"]) if e.get("variant") in claim.variants else 0)
    if not entries:
        return ClaimOutcome(claim, NOT_MEASURABLE, why="service_variant_missing", detail=_selection(claim))
    if claim.gpu:
        on_gpu = [e for e in entries if is_gpu(str(e.get("provider")))]
        if not on_gpu:
            return _no_gpu_cell(claim, result, sorted({str(e.get("provider")) for e in entries}))
        entries = on_gpu
    entry = next((e for e in entries if e.get("status") == "ok"), entries[0])
    if entry.get("status") != "ok":
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why="service_not_run", detail=entry.get("reason"))
    if claim.check == "no_leak":
        return _leak_claim(claim, entry)
    if claim.check == "concurrent_requests":
        return _concurrency_claim(claim, entry)
    value, facts = service_value(claim.check, entry)
    if value is None:
        why = "metrics_not_probed" if claim.check == "metrics_status" else "service_figure_missing"
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why=why, facts=facts)
    noisy = noisy_figure(entry) if claim.check in TIMING_CHECKS else None
    model = next((c.model.sha256 for c in result.cells if c.variant == entry.get("variant") and c.model), None)
    outcome = judged(claim, _service_measured(claim.check, entry, value), noisy, facts, service=entry)
    return _comparable(outcome, model, (result.dataset or {}).get("fingerprint"))


def _service_measured(check: str, entry: ServiceEntry, value: float) -> Measured:
    """/detect quantiles get an interval from the load's own samples (contiguous blocks of requests: the
    requests of one stretch of time share its conditions); status codes and counts are exact; the rest, and
    files without samples, are judged on the value."""
    if check in ("health_status", "metrics_status", "invalid_inputs"):
        return Measured(value, (value, value), "exact")
    samples = list((entry.get("load") or {}).get("samples_ms") or [])
    if check in ("max_service_p50_ms", "max_service_p99_ms") and samples:
        groups, _ = stats.replicate_groups(samples, None)
        est = stats.quantile_interval(groups, "p50" if check == "max_service_p50_ms" else "p99")
        if est is not None:
            return Measured(value, (est[1], est[2]), "interval", len(samples), "requests")
    return Measured(value, None, "point")


def _leak_claim(claim: Claim, entry: ServiceEntry) -> ClaimOutcome:
    """No leak: ❌ when the load test's rule flagged one; ✅ only when the run could have seen a leak as slow as
    the claim tolerates (the rule's growth threshold over the run's duration); inconclusive otherwise."""
    load = entry.get("load") or {}
    server = load.get("server") or {}
    start, end, seconds = server.get("rss_start_mb"), server.get("rss_end_mb"), load.get("duration_s")
    suspected = server.get("leak_suspected")
    facts: dict[str, Any] = {"start": start, "end": end, "seconds": seconds, "rate": load.get("target_rate")}
    if suspected is None or start is None or end is None or not seconds:
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why="service_figure_missing", facts=facts)
    threshold = max(LEAK_FLOOR_MB, LEAK_FRACTION * start)  # bench.load.verdicts.LEAK_RULE's growth threshold
    facts["floor"] = threshold / seconds * 60.0  # MB/min: the slowest steady leak this run's rule would flag
    value = (end - start) / seconds * 60.0
    tolerated = claim.accepted.high
    out = ClaimOutcome(claim, FAIL, value, None, service=entry, facts=facts, basis="point")
    if suspected:
        return out
    if tolerated is not None and facts["floor"] <= tolerated:
        out.status = PASS
        return out
    out.status, out.why = INCONCLUSIVE, "leak_floor"
    facts["tolerated"] = tolerated
    facts["seconds_needed"] = threshold / tolerated * 60.0 if tolerated and tolerated > 0 else None
    return out


def _concurrency_claim(claim: Claim, entry: ServiceEntry) -> ClaimOutcome:
    """Handles concurrent requests: some load with no error (a find-max step: within its p99 SLO too) kept at
    least ``limit`` requests in flight on average (Little's law: rate × latency; find-max steps count with their
    median, which understates it). ❌ when the /detect load itself held that many and had errors; inconclusive
    when no load held that many."""
    load = entry.get("load") or {}
    need = claim.accepted.low if claim.accepted.low is not None else 2.0
    mean_ms = (load.get("latency_ms") or {}).get("mean")
    rate = load.get("achieved_rate") or load.get("target_rate")
    errors = sum((load.get("errors") or {}).values())
    tried: list[tuple[float, int, float]] = []  # (in flight, errors, rate)
    if rate and mean_ms:
        tried.append((rate * mean_ms / 1000.0, errors, rate))
    for step in (entry.get("max_rate") or {}).get("steps") or []:
        step_rate, p50 = step.get("achieved_rate") or step.get("rate"), step.get("p50_ms")
        if step_rate and p50:  # a step over the SLO counts as one with errors: it did not handle its load well
            failed = sum((step.get("errors") or {}).values()) or int(not step.get("passed", True))
            tried.append((step_rate * p50 / 1000.0, failed, step_rate))
    if not tried:
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why="service_figure_missing")
    clean = [t for t in tried if t[1] == 0]
    best = max(clean or tried)
    facts: dict[str, Any] = {"rate": best[2], "errors": best[1], "need": need}
    out = ClaimOutcome(claim, INCONCLUSIVE, best[0], None, service=entry, facts=facts, basis="point")
    if clean and best[0] >= need:
        out.status = PASS
    elif tried[0][1] and tried[0][0] >= need:
        out.status, out.value = FAIL, tried[0][0]
        out.facts = {**facts, "rate": tried[0][2], "errors": tried[0][1]}
    else:
        out.why = "low_concurrency"
        facts["rate_needed"] = need / (mean_ms / 1000.0) if mean_ms else None
    noisy = noisy_figure(entry)
    if noisy and out.status != INCONCLUSIVE:
        out.status, out.why, out.detail, out.noisy = INCONCLUSIVE, "noisy", noisy, noisy
    return out


def service_value(check: str, entry: ServiceEntry) -> tuple[float | None, dict[str, Any]]:
    """A service claim's value from one RunResult.service entry, and the facts shown beside it."""
    load = entry.get("load") or {}
    lat = load.get("latency_ms") or {}
    facts: dict[str, Any] = {"rate": load.get("target_rate"), "duration_s": load.get("duration_s")}
    if check == "max_service_p50_ms":
        return lat.get("p50"), {**facts, "inprocess": entry.get("inprocess_p50_ms")}
    if check == "max_service_p99_ms":
        return lat.get("p99"), facts
    if check == "max_batch_ms_per_image":
        batch = entry.get("batch_endpoint") or {}
        return batch.get("ms_per_image_p50"), {
            "files": batch.get("files_per_request"),
            "request_p50": (batch.get("latency_ms") or {}).get("p50"),
        }
    if check == "health_status":
        health = entry.get("health") or {}
        return health.get("http_status"), {"status": (health.get("body") or {}).get("status")}
    if check == "metrics_status":
        probe = cast(Mapping[str, Any], entry).get("metrics") or {}
        return probe.get("http_status"), {}
    if check == "invalid_inputs":
        cases = entry.get("invalid_inputs") or []
        if not cases:
            return None, {}
        handled = sum(1 for c in cases if c.get("status") == c.get("expected"))
        return handled / len(cases), {"handled": handled, "cases": len(cases)}
    raise AssertionError(check)  # pragma: no cover - the leak and concurrency claims are judged on their own


def counts(outcomes: Sequence[ClaimOutcome]) -> dict[str, int]:
    """How many claims ended in each status (every status present, 0 included)."""
    return {s: sum(1 for o in outcomes if o.status == s) for s in STATUSES}


__all__ = [
    "DEFAULT_CLAIMS",
    "FAIL",
    "INCONCLUSIVE",
    "NOT_COMPARABLE",
    "NOT_MEASURABLE",
    "PASS",
    "STATUSES",
    "Accepted",
    "Claim",
    "ClaimOutcome",
    "ClaimSet",
    "Measured",
    "accepted_range",
    "claim_checks",
    "claims_for",
    "counts",
    "evaluate_claims",
    "judged",
    "load_claims",
    "parse_claims",
    "parse_tolerance",
    "quantile_figure",
    "replicate_interval",
    "service_value",
    "to_decide",
]
