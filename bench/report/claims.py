"""Claims: the hand-written report's quantitative statements, each answered from the measurements.

A claims file (TOML, ``[[claim]]`` tables; the built-in one, ``claims.toml``, holds the seed report's) says
for each claim which figure answers it, the limit, and which measured cell or service entry to read it from
(the first of ``variants`` × ``providers`` × ``batch_sizes``, in that order of preference, that ran). Each
claim ends ✅, ❌, or "not measurable here" with the reason (no GPU on this machine, no PyTorch row, no
service run); a claim is never ✅ on a figure that was not measured. Cell figures come from the release
policy's own measuring functions (:mod:`bench.report.policy`), so a claim and a check can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from bench.errors import InputError
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
    relative_figure,
)
from bench.results import CellResult, ClaimsRecord, RunResult, ServiceEntry

DEFAULT_CLAIMS = Path(__file__).with_name("claims.toml")

PASS, FAIL, NOT_MEASURABLE = "pass", "fail", "not_measurable"

# Figures only a claim reads (key → (unit, direction)); direction "range" takes limit = [low, high], "eq" one value.
CELL_MEASURES: dict[str, tuple[str, str]] = {
    "gpu_util_mean_pct": ("%", "range"),  # GPU utilisation, mean over the timed loop
}
SERVICE_MEASURES: dict[str, tuple[str, str]] = {
    "max_service_p50_ms": ("ms", "max"),  # /detect end to end under the open-loop load, p50
    "max_service_p99_ms": ("ms", "max"),  # the same, p99
    "max_batch_ms_per_image": ("ms", "max"),  # /detect/batch: request p50 ÷ files per request
    "health_status": ("", "eq"),  # GET /health status code once the model was ready
    "no_leak": ("", "eq"),  # 0 when the load test saw no leak (1: suspected)
    "invalid_inputs": ("", "all"),  # bad uploads answered with the expected 4xx status, of all sent
}


def claim_checks() -> dict[str, tuple[str, str]]:
    """Every check a claim may name, with its unit and direction."""
    return {**CHECKS, **RELATIVE_CHECKS, **CELL_MEASURES, **SERVICE_MEASURES}


@dataclass(frozen=True)
class Claim:
    """One statement of the hand-written report and how to check it."""

    id: str
    text: dict[str, str]  # language → the claim as the report states it
    check: str
    limit: float | tuple[float, float]
    variants: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    relative_to: str | None = None  # relative checks: a variant of this run, or "previous"
    results: str | None = None  # relative_to = "previous": the earlier results file
    seed: str = ""  # where the hand-written report says it

    def text_in(self, lang: str) -> str:
        return self.text.get(lang) or self.text.get("en") or self.id

    @property
    def direction(self) -> str:
        return claim_checks()[self.check][1]


@dataclass
class ClaimOutcome:
    """A claim's answer: status, the measured value (None when not measurable, with ``why``/``detail``), what
    it was measured on, and facts the report states beside the value (reference row, memory kind, …)."""

    claim: Claim
    status: str
    value: float | None = None
    interval: tuple[float, float] | None = None
    cell: CellResult | None = None
    service: ServiceEntry | None = None
    why: str | None = None
    detail: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple[Claim, ...]
    source: str | None = None  # the file; None = the built-in seed claims
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # as read: recorded in the run's config

    def to_config(self) -> ClaimsRecord:
        """What ``bench matrix`` records (config.claims), so ``bench report`` answers the same claims later."""
        return {"source": self.source, "claim": self.raw.get("claim", [])}


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
    claims = tuple(_claim(where, i, item) for i, item in enumerate(items))
    ids = [c.id for c in claims]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(f"{where}: claim ids must be unique, got {', '.join(twice)} more than once")
    return ClaimSet(claims, source, data)


def _claim(where: str, index: int, item: Any) -> Claim:
    if not isinstance(item, dict):
        raise InputError(f"{where}: claim {index + 1} must be a table")
    name = str(item.get("id") or f"#{index + 1}")
    known = claim_checks()
    check = item.get("check")
    if check not in known:
        raise InputError(f"{where}: claim {name}: check must be one of {', '.join(known)}, got {check!r}")
    text = item.get("text")
    if isinstance(text, str):
        text = {"en": text}
    if not isinstance(text, dict) or not text.get("en"):
        raise InputError(f'{where}: claim {name}: needs text.en = "the claim as stated"')
    direction = known[check][1]
    limit = item.get("limit")
    if direction == "range":
        if not (
            isinstance(limit, list) and len(limit) == 2 and all(_is_number(v) for v in limit) and limit[0] <= limit[1]
        ):
            raise InputError(f"{where}: claim {name}: limit must be [low, high] for {check}")
        limit = (float(limit[0]), float(limit[1]))
    elif direction == "all":
        limit = 1.0 if limit is None else limit
    if not isinstance(limit, tuple):
        if not _is_number(limit):
            raise InputError(f"{where}: claim {name}: limit must be a number, got {limit!r}")
        limit = float(limit)
    relative_to = item.get("relative_to")
    if check in RELATIVE_CHECKS and not relative_to:
        raise InputError(f'{where}: claim {name}: {check} needs relative_to = "fp32" (a variant) or "previous"')
    if relative_to == PREVIOUS and not item.get("results"):
        raise InputError(f'{where}: claim {name}: relative_to = "previous" needs results = "path/results.json"')
    lists = {}
    for key in ("variants", "providers", "batch_sizes"):
        value = item.get(key, [])
        if not isinstance(value, list):
            raise InputError(f"{where}: claim {name}: {key} must be a list, got {value!r}")
        lists[key] = tuple(value)
    return Claim(
        id=name,
        text={str(k): str(v) for k, v in text.items()},
        check=check,
        limit=limit,
        relative_to=None if relative_to is None else str(relative_to),
        results=item.get("results"),
        seed=str(item.get("seed") or ""),
        **lists,
    )


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def claims_for(result: RunResult, override: str | Path | None = None) -> ClaimSet:
    """The claims to answer: ``override``, else the ones recorded in the run, else the built-in seed claims."""
    if override is not None:
        return load_claims(override)
    recorded = result.config.get("claims")
    if isinstance(recorded, dict) and recorded.get("claim"):
        return parse_claims(recorded, recorded.get("source"))
    return load_claims(None)


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
    needs_gpu = claim.check in ("max_gpu_memory_mb", "gpu_util_mean_pct")
    if needs_gpu:
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
    return ClaimOutcome(
        claim,
        PASS if _meets(claim, figure.value) else FAIL,
        value=figure.value,
        interval=figure.interval,
        cell=cell,
        facts=facts,
    )


def _cell_figure(
    claim: Claim, cell: CellResult, result: RunResult, policy: Policy, previous: RunResult | None
) -> Figure:
    if claim.check in RELATIVE_CHECKS:
        assert claim.relative_to is not None
        return relative_figure(claim.check, claim.relative_to, cell, result, previous, claim.results)
    if claim.check == "gpu_util_mean_pct":
        value = (cell.memory or {}).get("gpu_util_mean_pct")
        return Figure(value, None if value is not None else "gpu_not_sampled", (cell.memory or {}).get("gpu_reason"))
    return measure_check(claim.check, cell, result, policy)


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


def _meets(claim: Claim, value: float) -> bool:
    direction, limit = claim.direction, claim.limit
    if isinstance(limit, tuple):
        return limit[0] <= value <= limit[1]
    if direction == "max":
        return value <= limit
    if direction == "min":
        return value >= limit
    if direction == "all":
        return value >= limit  # the share of cases handled: 1.0 = all
    return value == limit


def _service_claim(claim: Claim, result: RunResult) -> ClaimOutcome:
    entries = [e for e in result.service or [] if not claim.variants or e.get("variant") in claim.variants]
    entries.sort(key=lambda e: claim.variants.index(e["variant"]) if e.get("variant") in claim.variants else 0)
    if not result.service:
        return ClaimOutcome(claim, NOT_MEASURABLE, why="no_service")
    if not entries:
        return ClaimOutcome(claim, NOT_MEASURABLE, why="service_variant_missing", detail=_selection(claim))
    entry = next((e for e in entries if e.get("status") == "ok"), entries[0])
    if entry.get("status") != "ok":
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why="service_not_run", detail=entry.get("reason"))
    value, facts = service_value(claim.check, entry)
    if value is None:
        return ClaimOutcome(claim, NOT_MEASURABLE, service=entry, why="service_figure_missing", facts=facts)
    return ClaimOutcome(claim, PASS if _meets(claim, value) else FAIL, value=value, service=entry, facts=facts)


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
    if check == "no_leak":
        server = load.get("server") or {}
        leak = server.get("leak_suspected")
        return (None if leak is None else float(bool(leak))), {
            **facts,
            "rss_start": server.get("rss_start_mb"),
            "rss_end": server.get("rss_end_mb"),
        }
    if check == "invalid_inputs":
        cases = entry.get("invalid_inputs") or []
        if not cases:
            return None, {}
        handled = sum(1 for c in cases if c.get("status") == c.get("expected"))
        return handled / len(cases), {"handled": handled, "cases": len(cases)}
    raise AssertionError(check)  # pragma: no cover - SERVICE_MEASURES lists the same keys


__all__ = [
    "DEFAULT_CLAIMS",
    "FAIL",
    "NOT_MEASURABLE",
    "PASS",
    "Claim",
    "ClaimOutcome",
    "ClaimSet",
    "claim_checks",
    "claims_for",
    "evaluate_claims",
    "load_claims",
    "parse_claims",
    "service_value",
]
