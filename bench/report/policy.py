"""Release policy (a TOML file) and its checks against measured cells.

A check is ✅ only when the run measured the figure and it meets the limit; a figure the run could not
measure is "not measured" (never ✅), and a check that cannot apply to a cell (GPU memory of a CPU
cell) is "n/a". The built-in default policy holds the seed report's own targets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError
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
    "max_p99_ms": ("ms", "max"),
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
RANK_BY = ("p50_ms", "p95_ms", "p99_ms", "throughput_ips")
CANDIDATE_KEYS = ("variants", "providers", "batch_sizes")

PASS, FAIL, NOT_MEASURED, NOT_APPLICABLE = "pass", "fail", "not_measured", "n/a"


@dataclass(frozen=True)
class Policy:
    """Limits per check, per-provider overrides, which cells are release candidates, how to rank them."""

    checks: dict[str, float]
    providers: dict[str, dict[str, float]] = field(default_factory=dict)
    candidates: dict[str, list[Any]] = field(default_factory=dict)
    reference: str = "fp32"
    rank_by: str = "p95_ms"
    source: str | None = None  # the file it came from; None = the built-in default
    robustness: dict[str, dict[str, float]] = field(default_factory=dict)  # perturbation → check → limit

    def limits_for(self, provider: str) -> dict[str, float]:
        """Check → limit for ``provider``'s cells (overrides applied), in the canonical check order."""
        merged = {**self.checks, **self.providers.get(provider, {})}
        return {k: float(merged[k]) for k in CHECKS if k in merged}

    def all_check_keys(self) -> list[str]:
        keys = set(self.checks).union(*self.providers.values()) if self.providers else set(self.checks)
        return [k for k in CHECKS if k in keys]

    def is_candidate(self, cell: CellResult) -> bool:
        c = self.candidates
        return (
            (not c.get("variants") or cell.variant in c["variants"])
            and (not c.get("providers") or cell.provider in c["providers"])
            and (not c.get("batch_sizes") or cell.batch_size in c["batch_sizes"])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.checks,
            "reference": self.reference,
            "rank_by": self.rank_by,
            "providers": self.providers,
            "candidates": self.candidates,
            **({"robustness": self.robustness} if self.robustness else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Policy:
        where = source or "the policy"
        data = dict(data)
        providers = data.pop("providers", {}) or {}
        candidates = data.pop("candidates", {}) or {}
        reference = data.pop("reference", "fp32")
        rank_by = data.pop("rank_by", "p95_ms")
        robustness = _robustness_table(where, data.pop("robustness", {}) or {})
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
            source=source,
            robustness=robustness,
        )


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
            "(plus reference, rank_by, [providers.NAME], [candidates])"
        )
    return True


def _limit(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def load_policy(path: str | Path | None = None) -> Policy:
    """Read a policy TOML (the built-in default when ``path`` is None); a bad file is an input error."""
    file = DEFAULT_POLICY if path is None else Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"policy file {file} not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"policy file {file} is not valid TOML: {exc}") from exc
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


def evaluate_policy(result: RunResult, policy: Policy) -> PolicyVerdict:
    """Every check of ``policy`` on every cell of ``result`` (not-run cells included, as rows)."""
    rows = []
    for cell in result.cells:
        outcomes = []
        for key, limit in policy.limits_for(cell.provider).items():
            value, why, detail, applicable = _measure(key, cell, result, policy)
            if not applicable:
                outcomes.append(CheckOutcome(key, limit, None, NOT_APPLICABLE, why, detail))
            elif value is None:
                outcomes.append(CheckOutcome(key, limit, None, NOT_MEASURED, why, detail))
            else:
                ok = value <= limit if CHECKS[key][1] == "max" else value >= limit
                outcomes.append(CheckOutcome(key, limit, value, PASS if ok else FAIL, why, detail))
        outcomes.extend(robustness_outcomes(cell, result, policy))
        rows.append(CellChecks(cell, outcomes, policy.is_candidate(cell)))
    return PolicyVerdict(policy, rows)


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


def _measure(key: str, cell: CellResult, result: RunResult, policy: Policy) -> Measured:
    """(value, reason code, detail, applicable) of one check on one cell."""
    if key == "max_model_mb":
        return (cell.model.size_mb, None, None, True) if cell.model else (None, "no_model", None, True)
    if cell.status != "ok":
        return None, "not_run", cell.status, True
    lat, mem = cell.latency_ms or {}, cell.memory or {}
    if key == "max_p99_ms":
        return lat.get("p99"), None if lat.get("p99") is not None else "no_latency", None, True
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
    acc = result.accuracy_of(cell.variant, cell.provider)
    if acc is None or acc.get("accuracy") is None:
        reason = result.config.get("accuracy_reason")
        return None, "no_accuracy" if reason else "not_evaluated", reason, True
    if key == "min_accuracy_pct":
        return acc["accuracy"] * 100.0, None, None, True
    if key == "max_accuracy_drop_pt":
        ref, where = result.reference_accuracy(policy.reference, cell.provider)
        if ref is None:
            return None, "no_reference", policy.reference, True
        return (ref - acc["accuracy"]) * 100.0, "reference_elsewhere" if where else None, where, True
    raise AssertionError(key)  # pragma: no cover - CHECKS and _measure list the same keys


__all__ = [
    "CHECKS",
    "DEFAULT_POLICY",
    "ROBUSTNESS_CHECKS",
    "CellChecks",
    "CheckOutcome",
    "Policy",
    "PolicyVerdict",
    "evaluate_policy",
    "load_policy",
    "policy_for",
    "robustness_key",
    "robustness_outcomes",
    "split_robustness_key",
]
