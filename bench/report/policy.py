"""Release policy (a TOML file) and its checks against measured cells.

A check is ✅ only when the run measured the figure and it meets the limit; a figure the run could not
measure is "not measured" (never ✅), and a check that cannot apply to a cell (GPU memory of a CPU
cell) is "n/a". The built-in default policy holds the seed report's own targets.

Accuracy checks (``max_accuracy_drop_pt``, ``min_accuracy_pct``) are judged on the figure's 95 % interval
(bench.metrics; the drop's is paired, on the same images as the reference): ✅ only when the whole interval
meets the limit, ❌ when none of it does, otherwise "inconclusive" with about how many images (or groups)
would decide it. An inconclusive check never passes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench import stats
from bench.bundle import is_pytorch_variant
from bench.errors import InputError
from bench.metrics import critical_value, tango_interval, units_needed, wilson_interval
from bench.perturb import perturbation_names
from bench.providers import is_gpu
from bench.results import CellResult, RunResult

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_POLICY = Path(__file__).with_name("default_policy.toml")

# check key → (unit, direction): "max" passes when value ≤ limit, "min" when value ≥ limit.
CHECKS: dict[str, tuple[str, str]] = {
    "max_p99_ms": ("ms", "max"),  # per call (one batch)
    "max_p99_ms_per_image": ("ms", "max"),  # per call ÷ batch size: the limit that means the same at every batch
    "max_accuracy_drop_pt": ("pt", "max"),
    "min_accuracy_pct": ("%", "min"),
    "max_gpu_memory_mb": ("MB", "max"),
    "max_rss_mb": ("MB", "max"),
    "max_model_mb": ("MB", "max"),
    "min_throughput_ips": ("img/s", "min"),
}
# Robustness checks (``[robustness."SPEC"]`` tables; runs with --perturb): key → (unit, direction).
ROBUSTNESS_CHECKS: dict[str, tuple[str, str]] = {
    "max_flip_rate_pct": ("%", "max"),  # decisions differing from the reference variant's under SPEC
    "min_delta_auc_pt": ("pt", "min"),  # ROC AUC under SPEC − the same variant's clean AUC
    "min_delta_accuracy_pt": ("pt", "min"),  # accuracy under SPEC − the same variant's clean accuracy
}
ROBUSTNESS_PREFIX = "robustness."
# Relative checks (``[relative.REF]`` tables): the cell against a reference row on the same provider and batch
# size — another variant of this run (``fp32``, ``pytorch``) or the same cell in a previous results file
# (``[relative.previous] results = "path/results.json"``). key → (unit, direction).
RELATIVE_CHECKS: dict[str, tuple[str, str]] = {
    "min_speedup_p50": ("×", "min"),  # reference median ÷ cell median (> 1: the cell is faster), bootstrap interval
    "max_memory_ratio": ("×", "max"),  # cell ÷ reference: GPU peak per process on GPU cells, RSS peak on cpu
    "max_size_ratio": ("×", "max"),  # model file size, cell ÷ reference
}
RELATIVE_PREFIX = "relative."
PREVIOUS = "previous"  # the reference row is the same cell of an earlier results file
RANK_BY = ("p50_ms", "p95_ms", "p99_ms", "throughput_ips")
DEFAULT_RANK_MARGIN = 0.05
CANDIDATE_KEYS = ("variants", "providers", "batch_sizes")

PASS, FAIL, NOT_MEASURED, NOT_APPLICABLE = "pass", "fail", "not_measured", "n/a"
INCONCLUSIVE = "inconclusive"  # an accuracy check whose interval straddles the limit
ACCURACY_CHECKS = ("max_accuracy_drop_pt", "min_accuracy_pct")  # judged on their interval


@dataclass(frozen=True)
class Policy:
    """Limits per check, per-provider overrides, which cells are release candidates, how to rank them."""

    checks: dict[str, float]
    providers: dict[str, dict[str, float]] = field(default_factory=dict)
    candidates: dict[str, list[Any]] = field(default_factory=dict)
    reference: str = "fp32"
    rank_by: str = "p95_ms"
    # practical margin of the recommendation: two cells are tied when their ratio's 95 % interval on rank_by lies
    # within ×[1/(1+m), 1+m]; a cell slower than the best beyond it is never tied (0.05: 5 %)
    rank_margin: float = DEFAULT_RANK_MARGIN
    source: str | None = None  # the file it came from; None = the built-in default
    robustness: dict[str, dict[str, float]] = field(default_factory=dict)  # perturbation → check → limit
    relative: dict[str, dict[str, float]] = field(default_factory=dict)  # reference row → check → limit
    previous_results: str | None = None  # [relative.previous] results = "…": the earlier results file

    def limits_for(self, provider: str) -> dict[str, float]:
        """Check → limit for ``provider``'s cells (overrides applied), in the canonical check order."""
        merged = {**self.checks, **self.providers.get(provider, {})}
        return {k: float(merged[k]) for k in CHECKS if k in merged}

    def all_check_keys(self) -> list[str]:
        keys = set(self.checks).union(*self.providers.values()) if self.providers else set(self.checks)
        return [k for k in CHECKS if k in keys]

    def is_candidate(self, cell: CellResult) -> bool:
        """Whether ``cell`` may be released. PyTorch rows are the baseline the ONNX variants are measured
        against, so they are candidates only when ``[candidates] variants`` names them."""
        c = self.candidates
        return (
            (cell.variant in c["variants"] if c.get("variants") else not is_pytorch_variant(cell.variant))
            and (not c.get("providers") or cell.provider in c["providers"])
            and (not c.get("batch_sizes") or cell.batch_size in c["batch_sizes"])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.checks,
            "reference": self.reference,
            "rank_by": self.rank_by,
            "rank_margin": self.rank_margin,
            "providers": self.providers,
            "candidates": self.candidates,
            **({"robustness": self.robustness} if self.robustness else {}),
            **({"relative": _relative_dict(self.relative, self.previous_results)} if self.relative else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Policy:
        where = source or "the policy"
        data = dict(data)
        providers = data.pop("providers", {}) or {}
        candidates = data.pop("candidates", {}) or {}
        reference = data.pop("reference", "fp32")
        rank_by = data.pop("rank_by", "p95_ms")
        rank_margin = _limit(where, "rank_margin", data.pop("rank_margin", DEFAULT_RANK_MARGIN))
        if not 0.0 < rank_margin < 1.0:
            raise InputError(
                f"{where}: rank_margin must be a fraction between 0 and 1 (0.05 = 5 %), got {rank_margin:g}"
            )
        robustness = _robustness_table(where, data.pop("robustness", {}) or {})
        relative, previous_results = _relative_table(where, data.pop("relative", {}) or {})
        checks = {k: _limit(where, k, v) for k, v in data.items() if _known(where, k)}
        if not isinstance(providers, dict):
            raise InputError(f"{where}: [providers] must be a table of provider tables")
        over: dict[str, dict[str, float]] = {}
        for name, table in providers.items():
            if not isinstance(table, dict):
                raise InputError(f"{where}: [providers.{name}] must be a table of check limits")
            over[str(name)] = {
                k: _limit(where, f"providers.{name}.{k}", v)
                for k, v in table.items()
                if _known(where, k, f"providers.{name}.")
            }
        if not isinstance(candidates, dict) or any(k not in CANDIDATE_KEYS for k in candidates):
            raise InputError(f"{where}: [candidates] takes only {', '.join(CANDIDATE_KEYS)} (lists)")
        for k, v in candidates.items():
            if not isinstance(v, list):
                raise InputError(f"{where}: candidates.{k} must be a list, got {v!r}")
        if rank_by not in RANK_BY:
            raise InputError(f"{where}: rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
        return cls(
            checks=checks,
            providers=over,
            candidates={k: list(v) for k, v in candidates.items()},
            reference=str(reference),
            rank_by=rank_by,
            rank_margin=rank_margin,
            source=source,
            robustness=robustness,
            relative=relative,
            previous_results=previous_results,
        )


def _relative_dict(relative: dict[str, dict[str, float]], previous: str | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {ref: dict(limits) for ref, limits in relative.items()}
    if previous is not None:
        out.setdefault(PREVIOUS, {})["results"] = previous
    return out


def _relative_table(where: str, table: Any) -> tuple[dict[str, dict[str, float]], str | None]:
    """``[relative.pytorch] min_speedup_p50 = 2.0`` → ({"pytorch": {"min_speedup_p50": 2.0}}, previous file)."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: [relative] must hold tables per reference row, e.g. [relative.fp32]")
    out: dict[str, dict[str, float]] = {}
    previous = None
    for ref, limits in table.items():
        if not isinstance(limits, dict):
            raise InputError(f"{where}: [relative.{ref}] must be a table of check limits")
        limits = dict(limits)
        if ref == PREVIOUS:
            previous = limits.pop("results", None)
            if not isinstance(previous, str) or not previous:
                raise InputError(f'{where}: [relative.previous] needs results = "path/to/results.json"')
        for key in limits:
            if key not in RELATIVE_CHECKS:
                raise InputError(
                    f"{where}: unknown key 'relative.{ref}.{key}'; relative checks are " + ", ".join(RELATIVE_CHECKS)
                )
        out[str(ref)] = {k: _limit(where, f"relative.{ref}.{k}", v) for k, v in limits.items()}
    return out, previous


def _robustness_table(where: str, table: Any) -> dict[str, dict[str, float]]:
    """``[robustness."jpeg:75"] max_flip_rate_pct = 1.0`` → {"jpeg:75": {"max_flip_rate_pct": 1.0}}."""
    if not isinstance(table, dict):
        raise InputError(f'{where}: [robustness] must hold tables per perturbation, e.g. [robustness."jpeg:75"]')
    out: dict[str, dict[str, float]] = {}
    for spec, limits in table.items():
        try:
            names = perturbation_names([str(spec)])[1:]
        except InputError as exc:
            raise InputError(f"{where}: [robustness.{spec!r}]: {exc}") from None
        if len(names) != 1:
            raise InputError(f'{where}: [robustness."{spec}"] must name one perturbation, e.g. "jpeg:75"')
        if not isinstance(limits, dict):
            raise InputError(f'{where}: [robustness."{spec}"] must be a table of check limits')
        for key in limits:
            if key not in ROBUSTNESS_CHECKS:
                raise InputError(
                    f"{where}: unknown key 'robustness.\"{spec}\".{key}'; robustness checks are "
                    + ", ".join(ROBUSTNESS_CHECKS)
                )
        out[names[0]] = {k: _limit(where, f"robustness.{spec}.{k}", v) for k, v in limits.items()}
    return out


def _known(where: str, key: str, prefix: str = "") -> bool:
    if key not in CHECKS:
        raise InputError(
            f"{where}: unknown key '{prefix}{key}'; checks are {', '.join(CHECKS)} "
            "(plus reference, rank_by, rank_margin, [providers.NAME], [candidates], [relative.REF], "
            '[robustness."SPEC"])'
        )
    return True


def _limit(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def read_toml(file: Path, what: str) -> dict[str, Any]:
    """A user's TOML file (``what``: "policy", "claims"); missing or malformed is an input error."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{what} file {file} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{what} file {file} is not valid TOML: {exc}") from exc


def load_policy(path: str | Path | None = None) -> Policy:
    """Read a policy TOML (the built-in default when ``path`` is None); a bad file is an input error."""
    data = read_toml(DEFAULT_POLICY if path is None else Path(path), "policy")
    return Policy.from_dict(data, source=None if path is None else str(path))


def policy_for(result: RunResult, override: str | Path | None = None) -> Policy:
    """The policy to judge ``result`` with: ``override``, else the one recorded in the run, else the default."""
    if override is not None:
        return load_policy(override)
    recorded = result.config.get("policy")
    if isinstance(recorded, dict):
        return Policy.from_dict(recorded, source=result.config.get("policy_file"))
    return load_policy(None)


@dataclass(frozen=True)
class CheckOutcome:
    """One check on one cell. ``why`` is a reason code (catalogue key ``why.<code>``) and ``detail`` its
    free text from the results (an ORT or NVML message), so reports translate the reason, not the data."""

    key: str
    limit: float
    value: float | None
    status: str  # pass | fail | not_measured | n/a
    why: str | None = None
    detail: str | None = None
    interval: tuple[float, float] | None = None  # 95 % interval of a relative figure (speed-up), when it has one
    needed: int | None = None  # inconclusive accuracy check: about how many ``unit``s would decide it
    unit: str | None = None  # what the accuracy interval counts: "image" or "group"


@dataclass
class CellChecks:
    cell: CellResult
    outcomes: list[CheckOutcome]
    candidate: bool

    @property
    def passed(self) -> bool:
        """Ran, and every check ✅ or n/a (a "not measured" check never passes)."""
        return self.cell.status == "ok" and all(o.status in (PASS, NOT_APPLICABLE) for o in self.outcomes)


@dataclass
class PolicyVerdict:
    policy: Policy
    rows: list[CellChecks]

    @property
    def candidates(self) -> list[CellChecks]:
        return [r for r in self.rows if r.candidate]

    @property
    def passing(self) -> list[CellChecks]:
        return [r for r in self.candidates if r.passed]

    @property
    def passed(self) -> bool:
        """At least one release candidate passes every check."""
        return bool(self.passing)


def evaluate_policy(result: RunResult, policy: Policy, previous: RunResult | None = None) -> PolicyVerdict:
    """Every check of ``policy`` on every cell of ``result`` (not-run cells included, as rows).

    ``previous`` is the earlier results file of ``[relative.previous]`` (read from the policy's path if None).
    """
    if previous is None and policy.previous_results:
        previous = load_previous(policy.previous_results, policy.source)
    rows = []
    for cell in result.cells:
        outcomes = []
        for key, limit in policy.limits_for(cell.provider).items():
            if key in ACCURACY_CHECKS:
                outcomes.append(accuracy_outcome(key, limit, cell, result, policy))
                continue
            value, why, detail, applicable = _measure(key, cell, result, policy)
            outcomes.append(_outcome(key, limit, CHECKS[key][1], Figure(value, why, detail, applicable)))
        for reference, limits in policy.relative.items():
            for check, limit in limits.items():
                figure = relative_figure(check, reference, cell, result, previous, policy.previous_results)
                outcomes.append(_outcome(relative_key(check, reference), limit, RELATIVE_CHECKS[check][1], figure))
        outcomes.extend(robustness_outcomes(cell, result, policy))
        rows.append(CellChecks(cell, outcomes, policy.is_candidate(cell)))
    return PolicyVerdict(policy, rows)


@dataclass(frozen=True)
class Figure:
    """One measured figure for a check or a claim: the value (None: not measured, with the reason code ``why``
    and its free-text ``detail``), whether it applies at all, and its 95 % interval where it has one."""

    value: float | None
    why: str | None = None
    detail: str | None = None
    applicable: bool = True
    interval: tuple[float, float] | None = None


def _outcome(key: str, limit: float, direction: str, figure: Figure) -> CheckOutcome:
    if not figure.applicable:
        return CheckOutcome(key, limit, None, NOT_APPLICABLE, figure.why, figure.detail)
    if figure.value is None:
        return CheckOutcome(key, limit, None, NOT_MEASURED, figure.why, figure.detail)
    ok = figure.value <= limit if direction == "max" else figure.value >= limit
    return CheckOutcome(key, limit, figure.value, PASS if ok else FAIL, figure.why, figure.detail, figure.interval)


def load_previous(path: str, policy_source: str | None = None) -> RunResult | None:
    """The earlier results file of a relative check; a relative path is tried from the policy file's folder too.
    None when it cannot be read (the checks then say "not measured" with the path), never an exception."""
    candidates = [Path(path)]
    if policy_source and not Path(path).is_absolute():
        candidates.append(Path(policy_source).parent / path)
    for candidate in candidates:
        if candidate.exists():
            try:
                return RunResult.load(candidate)
            except InputError:
                return None
    return None


def relative_key(check: str, reference: str) -> str:
    """The CheckOutcome key of a relative check: ``relative.min_speedup_p50@pytorch``."""
    return f"{RELATIVE_PREFIX}{check}@{reference}"


def split_relative_key(key: str) -> tuple[str, str] | None:
    """(check, reference) of a relative outcome key, None for the other checks."""
    if not key.startswith(RELATIVE_PREFIX):
        return None
    check, _, reference = key.removeprefix(RELATIVE_PREFIX).partition("@")
    return check, reference


def reference_row(
    cell: CellResult, reference: str, result: RunResult, previous: RunResult | None, previous_path: str | None = None
) -> tuple[CellResult | None, Figure | None]:
    """The reference cell for ``cell`` (same provider and batch size), or the Figure saying why there is none."""
    if reference == PREVIOUS:
        if previous is None:
            return None, Figure(None, "no_previous", previous_path or "—")
        ref = next((c for c in previous.cells if c.key == cell.key), None)
        if ref is None or ref.status != "ok":
            return None, Figure(None, "previous_missing", "/".join(map(str, cell.key)))
        return ref, None
    if cell.variant == reference:
        return None, Figure(None, "is_reference", reference, applicable=False)
    ref = next((c for c in result.cells if c.key == (reference, cell.provider, cell.batch_size)), None)
    if ref is None:
        return None, Figure(None, "reference_not_planned", reference)
    if ref.status != "ok":
        return None, Figure(None, "reference_not_run", ref.reason or ref.status)
    return ref, None


def speedup(cell: CellResult, ref: CellResult) -> Figure:
    """Reference median ÷ cell median with a two-level bootstrap interval over the replicates of both."""
    if not cell.samples_ms or not ref.samples_ms:
        a, b = (ref.latency_ms or {}).get("p50"), (cell.latency_ms or {}).get("p50")
        return Figure(None if not a or not b else a / b, None if a and b else "no_latency")
    mine, _ = stats.replicate_groups(cell.samples_ms, cell.sample_replicates or None)
    theirs, _ = stats.replicate_groups(ref.samples_ms, ref.sample_replicates or None)
    est = stats.ratio_interval(mine, theirs, "median", n_boot=1000)  # cell / reference: < 1 is faster
    if est.point is None or est.point <= 0:
        return Figure(None, "no_latency")
    interval = None if est.low is None or est.high is None else (1.0 / est.high, 1.0 / est.low)
    return Figure(1.0 / est.point, interval=interval)


def memory_ratio(cell: CellResult, ref: CellResult) -> Figure:
    """Cell ÷ reference peak memory: GPU memory per process on GPU cells, host RSS on cpu cells."""
    mine, theirs = cell.memory or {}, ref.memory or {}
    if is_gpu(cell.provider):
        a, b = mine.get("gpu_process_peak_mb"), theirs.get("gpu_process_peak_mb")
        if a is None or b is None or b <= 0:
            return Figure(None, "gpu_not_sampled", mine.get("gpu_process_reason") or mine.get("gpu_reason"))
        return Figure(a / b, "memory_gpu")
    a, b = mine.get("rss_peak_mb"), theirs.get("rss_peak_mb")
    if a is None or b is None or b <= 0:
        return Figure(None, "no_rss")
    return Figure(a / b, "memory_rss")


def relative_figure(
    check: str,
    reference: str,
    cell: CellResult,
    result: RunResult,
    previous: RunResult | None,
    previous_path: str | None = None,
) -> Figure:
    """One relative figure of ``cell`` against its reference row (see RELATIVE_CHECKS)."""
    if check == "max_size_ratio":
        if reference != PREVIOUS and cell.variant == reference:
            return Figure(None, "is_reference", reference, applicable=False)
        if reference == PREVIOUS and previous is None:
            return Figure(None, "no_previous", previous_path or "—")
        pool = previous.cells if reference == PREVIOUS and previous is not None else result.cells
        want = (lambda c: c.key == cell.key) if reference == PREVIOUS else (lambda c: c.variant == reference)
        ref_model = next((c.model for c in pool if want(c) and c.model is not None), None)
        if cell.model is None or ref_model is None or ref_model.size_mb <= 0:
            return Figure(None, "no_model" if cell.model is None else "reference_not_planned", reference)
        return Figure(cell.model.size_mb / ref_model.size_mb)
    ref, missing = reference_row(cell, reference, result, previous, previous_path)
    if missing is not None:
        return missing
    if cell.status != "ok":
        return Figure(None, "not_run", cell.status)
    assert ref is not None
    return speedup(cell, ref) if check == "min_speedup_p50" else memory_ratio(cell, ref)


def robustness_key(check: str, perturbation: str) -> str:
    """The CheckOutcome key of a robustness check: ``robustness.max_flip_rate_pct@jpeg:75``."""
    return f"{ROBUSTNESS_PREFIX}{check}@{perturbation}"


def split_robustness_key(key: str) -> tuple[str, str] | None:
    """(check, perturbation) of a robustness outcome key, None for the other checks."""
    if not key.startswith(ROBUSTNESS_PREFIX):
        return None
    check, _, perturbation = key.removeprefix(ROBUSTNESS_PREFIX).partition("@")
    return check, perturbation


def robustness_outcomes(cell: CellResult, result: RunResult, policy: Policy) -> list[CheckOutcome]:
    """The policy's robustness checks on one cell. They apply only to runs made with --perturb (else n/a);
    a perturbation the run did not evaluate is "not measured"; flips against the reference variant do not
    apply to the reference itself."""
    outcomes = []
    evaluated = result.config.get("perturbations") or []
    for perturbation, limits in policy.robustness.items():
        for check, limit in limits.items():
            key = robustness_key(check, perturbation)
            value, why, detail, applicable = _robust_value(check, perturbation, cell, result, policy, evaluated)
            if not applicable:
                outcomes.append(CheckOutcome(key, limit, None, NOT_APPLICABLE, why, detail))
            elif value is None:
                outcomes.append(CheckOutcome(key, limit, None, NOT_MEASURED, why, detail))
            else:
                ok = value <= limit if ROBUSTNESS_CHECKS[check][1] == "max" else value >= limit
                outcomes.append(CheckOutcome(key, limit, value, PASS if ok else FAIL, why, detail))
    return outcomes


def _robust_value(
    check: str, perturbation: str, cell: CellResult, result: RunResult, policy: Policy, evaluated: list[str]
) -> Measured:
    if not evaluated:
        return None, "no_perturb", None, False
    if check == "max_flip_rate_pct" and cell.variant == policy.reference:
        return None, "is_reference", None, False
    if cell.status != "ok":
        return None, "not_run", cell.status, True
    if perturbation not in evaluated:
        return None, "perturbation_not_run", perturbation, True
    acc = result.accuracy_of(cell.variant, cell.provider) or {}
    entry = next((e for e in acc.get("perturbations") or [] if e.get("perturbation") == perturbation), None)
    if entry is None:
        return None, "not_evaluated", None, True
    if check == "max_flip_rate_pct":
        agree = entry.get("agreement")
        if not agree:
            return None, "no_reference", policy.reference, True
        return agree["flip_rate"] * 100.0, None, None, True
    field_name = "delta_roc_auc" if check == "min_delta_auc_pt" else "delta_accuracy"
    vs: dict[str, Any] = dict(entry.get("vs_clean") or {})
    if vs.get(field_name) is None:
        return None, "robust_undefined", (vs.get("reasons") or {}).get(field_name), True
    return vs[field_name] * 100.0, None, None, True


Measured = tuple[float | None, str | None, str | None, bool]


def measure_check(key: str, cell: CellResult, result: RunResult, policy: Policy) -> Figure:
    """The figure one CHECKS key reads from one cell (what a claim on that check is answered with)."""
    if key in ACCURACY_CHECKS:
        return accuracy_figure(key, cell, result, policy).figure
    value, why, detail, applicable = _measure(key, cell, result, policy)
    return Figure(value, why, detail, applicable)


def _measure(key: str, cell: CellResult, result: RunResult, policy: Policy) -> Measured:
    """(value, reason code, detail, applicable) of one check on one cell."""
    if key == "max_model_mb":
        return (cell.model.size_mb, None, None, True) if cell.model else (None, "no_model", None, True)
    if cell.status != "ok":
        return None, "not_run", cell.status, True
    lat, mem = cell.latency_ms or {}, cell.memory or {}
    if key in ("max_p99_ms", "max_p99_ms_per_image"):
        p99 = lat.get("p99")
        if p99 is None:
            return None, "no_latency", None, True
        return (p99 if key == "max_p99_ms" else p99 / cell.batch_size), None, None, True
    if key == "min_throughput_ips":
        return cell.throughput_ips, None if cell.throughput_ips is not None else "no_latency", None, True
    if key == "max_rss_mb":
        value = mem.get("rss_peak_mb")
        return value, None if value is not None else "no_rss", None, True
    if key == "max_gpu_memory_mb":
        if not is_gpu(cell.provider):
            return None, "no_gpu", cell.provider, False
        if mem.get("gpu_process_peak_mb") is not None:
            return mem["gpu_process_peak_mb"], "gpu_process", None, True
        # The device-wide peak counts every process on the GPU: it can neither pass nor fail this
        # cell's check, so the check is "not measured" and says what the device-wide figure was.
        detail = mem.get("gpu_process_reason") or mem.get("gpu_reason")
        if mem.get("gpu_device_peak_mb") is not None:
            device = f"device-wide peak {mem['gpu_device_peak_mb']:,.0f} MB, all processes"
            detail = f"{detail} ({device})" if detail else device
        return None, "gpu_not_sampled", detail, True
    raise AssertionError(key)  # pragma: no cover - CHECKS, ACCURACY_CHECKS and _measure list the same keys


class AccuracyFigure(NamedTuple):
    """An accuracy check's figure with what deciding it needs: how many units (images, or the data set's groups) the
    interval rests on, which unit, and the interval at ``scale`` × the counts (images only: the shares are known)."""

    figure: Figure
    units: int | None = None
    unit: str = "image"
    project: Callable[[float], tuple[float, float]] | None = None


def accuracy_figure(key: str, cell: CellResult, result: RunResult, policy: Policy) -> AccuracyFigure:
    """An accuracy check's figure (accuracy %, or the drop against the policy's reference in points) with its 95 %
    interval (the drop's paired, from the agreement with the reference on the same images)."""
    if cell.status != "ok":
        return AccuracyFigure(Figure(None, "not_run", cell.status))
    acc = result.accuracy_of(cell.variant, cell.provider)
    accuracy = acc.get("accuracy") if acc is not None else None
    if acc is None or accuracy is None:
        reason = result.config.get("accuracy_reason")
        return AccuracyFigure(Figure(None, "no_accuracy" if reason else "not_evaluated", reason))
    unit = acc.get("ci_unit") or "image"
    units = acc.get("n_groups") if unit == "group" else acc.get("n")
    if key == "min_accuracy_pct":
        ci, n = acc.get("accuracy_ci"), acc.get("n") or 0
        figure = Figure(accuracy * 100.0, interval=None if ci is None else (ci[0] * 100.0, ci[1] * 100.0))
        if unit != "image" or not n:
            return AccuracyFigure(figure, units, unit)
        return AccuracyFigure(figure, units, unit, lambda s: _percent(wilson_interval(accuracy * n * s, n * s)))
    if cell.variant == policy.reference:
        return AccuracyFigure(Figure(None, "is_reference", policy.reference, applicable=False), units, unit)
    agree = acc.get("agreement") or {}
    if agree.get("reference") == policy.reference and agree.get("accuracy_drop_pt") is not None:
        ci, where = agree.get("accuracy_drop_pt_ci"), agree.get("reference_provider")
        elsewhere = where is not None and where != cell.provider
        interval = None if ci is None else (ci[0], ci[1])
        figure = Figure(
            agree["accuracy_drop_pt"], "reference_elsewhere" if elsewhere else None, where, interval=interval
        )
        pairs, n = agree.get("discordant"), agree.get("n") or units or 0
        if unit != "image" or not pairs or not n:
            return AccuracyFigure(figure, units, unit)
        worse, better = pairs
        z = critical_value()
        return AccuracyFigure(figure, n, unit, lambda s: _percent(tango_interval(worse * s, better * s, n * s, z)))
    ref, where = result.reference_accuracy(policy.reference, cell.provider)
    if ref is None:
        return AccuracyFigure(Figure(None, "no_reference", policy.reference), units, unit)
    # the point alone: the agreement is with another variant, or from a bench before paired intervals
    why = "no_interval" if agree.get("reference") == policy.reference else "no_paired_interval"
    return AccuracyFigure(Figure((ref - accuracy) * 100.0, why, policy.reference), units, unit)


def _percent(interval: tuple[float, float] | None) -> tuple[float, float]:
    low, high = interval or (0.0, 1.0)
    return low * 100.0, high * 100.0


def accuracy_outcome(key: str, limit: float, cell: CellResult, result: RunResult, policy: Policy) -> CheckOutcome:
    """An accuracy check judged on its interval (module docstring): ✅ when the whole interval meets ``limit``, ❌
    when none of it does, otherwise inconclusive, with about how many images (or groups) would decide it."""
    figure, units, unit, project = accuracy_figure(key, cell, result, policy)
    if not figure.applicable:
        return CheckOutcome(key, limit, None, NOT_APPLICABLE, figure.why, figure.detail)
    if figure.value is None:
        return CheckOutcome(key, limit, None, NOT_MEASURED, figure.why, figure.detail)
    if figure.interval is None:
        why = figure.why if figure.why == "no_paired_interval" else "no_interval"
        return CheckOutcome(key, limit, figure.value, INCONCLUSIVE, why, figure.detail, unit=unit)
    low, high = figure.interval
    upper_limit = CHECKS[key][1] == "max"
    if high <= limit if upper_limit else low >= limit:
        status = PASS
    elif low > limit if upper_limit else high < limit:
        status = FAIL
    else:
        status = INCONCLUSIVE
    needed = None
    if status == INCONCLUSIVE and units:
        needed = units_needed(units, figure.value, figure.interval, limit, project)
    return CheckOutcome(key, limit, figure.value, status, figure.why, figure.detail, figure.interval, needed, unit)


__all__ = [
    "ACCURACY_CHECKS",
    "CHECKS",
    "DEFAULT_POLICY",
    "INCONCLUSIVE",
    "PREVIOUS",
    "RELATIVE_CHECKS",
    "ROBUSTNESS_CHECKS",
    "CellChecks",
    "CheckOutcome",
    "Figure",
    "Policy",
    "PolicyVerdict",
    "accuracy_figure",
    "accuracy_outcome",
    "evaluate_policy",
    "load_policy",
    "load_previous",
    "measure_check",
    "policy_for",
    "read_toml",
    "reference_row",
    "relative_figure",
    "relative_key",
    "robustness_key",
    "robustness_outcomes",
    "split_relative_key",
    "split_robustness_key",
]
