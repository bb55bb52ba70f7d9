"""Baseline vs current: noise-aware regression verdicts (asv's rule: a factor *and* significance).

Latency is judged from the raw samples of both sides: a percentile-bootstrap interval of the ratio of
medians (and of p95) must lie wholly above 1 *and* the point ratio must exceed ``1 + tolerance`` before a
cell is called a regression (improvements symmetrically). Accuracy is a delta in points, backed by an
exact McNemar test when both sides stored per-image predictions. Memory and model size are plain
tolerances: they are not noisy enough to need an interval.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from typing_extensions import TypedDict

from bench.environment import machine_id
from bench.errors import InputError, VerdictFailed
from bench.results import SCHEMA_VERSION, CellKey, CellResult, RunResult, schema_of
from bench.timing import bootstrap_ratio

VERDICTS = ("regression", "improvement", "same", "incomparable")
Verdict = Literal["regression", "improvement", "same", "incomparable"]
Side = Literal["baseline", "current"]
MemoryMetric = Literal["rss_peak_mb", "gpu_process_peak_mb", "gpu_device_peak_mb"]
MEMORY_METRICS: tuple[MemoryMetric, ...] = ("rss_peak_mb", "gpu_process_peak_mb", "gpu_device_peak_mb")
# Config fields whose difference makes latency figures measure different things: warned about.
_CONFIG_WATCH = ("threads", "inter_op_threads", "graph_opt", "io_binding", "sample_hz", "device_id", "trt_fp16")


TAIL_CHUNK = 20  # calls per chunk of the p95 statistic (see _tail_row)
MIN_TAIL_CHUNKS, MAX_TAIL_CHUNKS = 5, 50
_MAX_BOOT_SAMPLES = 20_000
_MAX_BOOT_ELEMENTS = 10_000_000


def _p95(x: np.ndarray) -> float:
    return float(np.percentile(x, 95))


LATENCY_METRICS: dict[str, Callable[[np.ndarray], float]] = {"latency_p50_ms": np.median, "latency_p95_ms": _p95}


# --- tolerances -----------------------------------------------------------------------------------

_TOL = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+)\s*(?P<unit>%|pt|pts|pp)?\s*$", re.IGNORECASE)


def parse_tolerance(text: str | float, kind: str = "ratio") -> float:
    """``"10%"``/``"0.1"`` → 0.10 (a fraction) for ratios; ``"0.5pt"``/``"0.5%"``/``"0.005"`` → 0.5 points for accuracy.

    Accuracy is itself a percentage, so for it ``%`` means percentage points and a bare number is a
    fraction of 1 (as accuracy is stored). A bare number ≥ 1 for a ratio is refused: ``10`` is ambiguous.
    """
    raw = str(text)
    m = _TOL.match(raw)
    if not m:
        raise InputError(f"tolerance {raw!r} is not understood; write e.g. 10%, 0.1 or 0.5pt")
    num, unit = float(m["num"]), (m["unit"] or "").lower()
    if kind == "points":
        if unit in ("pt", "pts", "pp", "%"):
            return num
        if num >= 1:
            raise InputError(f"accuracy tolerance {raw!r} is ambiguous; write points (e.g. 0.5pt) or a fraction < 1")
        return num * 100.0
    if unit in ("pt", "pts", "pp"):
        raise InputError(f"tolerance {raw!r}: points (pt) apply to accuracy only; write a ratio such as 10% or 0.1")
    if unit == "%":
        return num / 100.0
    if num >= 1:
        raise InputError(f"tolerance {raw!r} is ambiguous; write {num:g}% or a fraction such as {num / 100:g}")
    return num


@dataclass(frozen=True)
class Tolerances:
    """How much worse a metric may get before it is a regression (latency/memory/size: fraction; accuracy: points)."""

    latency: float = 0.10
    accuracy_pt: float = 0.5
    memory: float = 0.10
    size: float | None = None  # None: same as memory
    confidence: float = 0.95  # of the bootstrap interval, and 1 - alpha of the McNemar test
    n_boot: int = 2000

    def __post_init__(self) -> None:
        for name in ("latency", "accuracy_pt", "memory"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} tolerance must be ≥ 0")
        if not 0.5 < self.confidence < 1:
            raise InputError("confidence must be between 0.5 and 1")

    @property
    def size_tol(self) -> float:
        return self.memory if self.size is None else self.size

    @classmethod
    def parse(
        cls, latency: str = "10%", accuracy: str = "0.5pt", memory: str = "10%", size: str | None = None
    ) -> Tolerances:
        return cls(
            latency=parse_tolerance(latency),
            accuracy_pt=parse_tolerance(accuracy, "points"),
            memory=parse_tolerance(memory),
            size=parse_tolerance(size) if size is not None else None,
        )

    def as_dict(self) -> AppliedTolerances:
        return {
            "latency": self.latency,
            "accuracy_pt": self.accuracy_pt,
            "memory": self.memory,
            "size": self.size_tol,
            "confidence": self.confidence,
        }


# --- result shape ---------------------------------------------------------------------------------


class AppliedTolerances(TypedDict, total=False):
    """The tolerances a comparison used (latency/memory/size: fractions; accuracy: points)."""

    latency: float
    accuracy_pt: float
    memory: float
    size: float
    confidence: float


class RunLabel(TypedDict):
    """Which results file a side of the comparison is."""

    path: str | None
    run_id: str
    created: str
    machine_id: str | None
    onnxruntime: str | None
    bench: str | None


class UnmatchedCell(TypedDict):
    """A cell not compared: in one run only, or its model file changed."""

    key: CellKey
    side: Side
    sha256: str | None
    why: str


@dataclass
class CompareRow:
    """One metric of one cell: both values, their ratio with its interval, the verdict and why."""

    key: CellKey
    metric: str
    baseline: float | str | None  # a figure; a status or a short sha256 for those rows
    current: float | str | None
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: Verdict = "same"
    why: str = ""
    delta: float | None = None  # accuracy: current - baseline, in points
    p_value: float | None = None  # accuracy: exact McNemar on per-image correctness
    baseline_key: CellKey | None = None  # bench ab with --against-variant: the other side's cell (omitted if None)


@dataclass
class CompareResult:
    """The verdicts between two RunResults (ARCHITECTURE.md, CompareResult)."""

    baseline: RunLabel
    current: RunLabel
    same_machine: bool
    rows: list[CompareRow] = field(default_factory=list)
    unmatched: list[UnmatchedCell] = field(default_factory=list)
    verdict: Literal["pass", "regression", "incomparable"] = "pass"  # incomparable: nothing could be compared
    cross_machine: bool = False
    tolerances: AppliedTolerances = field(default_factory=AppliedTolerances)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "regression": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row in data["rows"]:
            if row.get("baseline_key") is None:
                row.pop("baseline_key", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.verdict == "regression"]

    def raise_for_verdict(self) -> None:
        """Exit code as CLI.md says: 1 (VerdictFailed) on a regression, 2 (InputError) when incomparable."""
        if self.verdict == "regression":
            rows = self.regressions()
            first = "; ".join(f"{_key_text(r.key)} {r.metric}: {r.why}" for r in rows[:3])
            more = f" (+{len(rows) - 3} more)" if len(rows) > 3 else ""
            raise VerdictFailed(f"{len(rows)} regression(s): {first}{more}")
        if self.verdict == "incomparable":  # compare_runs puts the reason first among the warnings
            why = self.warnings[0] if self.warnings else "no cell could be compared"
            raise InputError(f"incomparable: {why}")

    def to_markdown(self, title: str = "bench compare") -> str:
        return render_markdown(self, title)


# --- comparing ------------------------------------------------------------------------------------


def load_pair(baseline: str | Path, current: str | Path) -> tuple[RunResult, RunResult]:
    """Read two results files, refusing different schema versions and files without cells, with a clear line."""
    raw = {}
    for side, path in (("baseline", baseline), ("current", current)):
        p = Path(path)
        p = p / "results.json" if p.is_dir() else p
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"{side} results file {p} not found") from exc
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{side} {p} is not a results JSON file ({exc})") from exc
        if not isinstance(data, dict) or "cells" not in data:
            raise InputError(f"{side} {p} is not a bench results file (no 'cells')")
        raw[side] = (p, data)
    vb, vc = raw["baseline"][1].get("schema_version"), raw["current"][1].get("schema_version")
    if vb != vc:
        raise InputError(
            f"schema versions differ: baseline {raw['baseline'][0]} is {vb!r}, current "
            f"{raw['current'][0]} is {vc!r}; re-run the older one with this bench "
            f"(reads {SCHEMA_VERSION})"
        )
    runs = []
    for side in ("baseline", "current"):
        p, data = raw[side]
        if not data["cells"]:
            raise InputError(f"{side} {p} has no cells: nothing to compare")
        runs.append(RunResult.from_dict(data))
    return runs[0], runs[1]


def run_label(run: RunResult, path: str | Path | None = None) -> RunLabel:
    env = run.environment or {}
    return {
        "path": str(path) if path is not None else None,
        "run_id": run.run_id,
        "created": run.created,
        "machine_id": _machine_id(run),
        "onnxruntime": env.get("onnxruntime"),
        "bench": env.get("bench"),
    }


def _machine_id(run: RunResult) -> str | None:
    env = run.environment or {}
    if env.get("machine_id"):
        return str(env["machine_id"])
    if not env:
        return None
    return machine_id(env)


def cell_key(cell: CellResult) -> CellKey:
    return {"variant": cell.variant, "provider": cell.provider, "batch_size": cell.batch_size}


def _sha(cell: CellResult) -> str | None:
    return cell.model.sha256 if cell.model is not None else None


def compare_runs(
    baseline: RunResult,
    current: RunResult,
    tolerances: Tolerances | None = None,
    cross_machine: bool = False,
    *,
    pairs: Sequence[tuple[CellResult, CellResult]] | None = None,
    labels: tuple[str | Path | None, str | Path | None] = (None, None),
) -> CompareResult:
    """Verdicts for every cell present in both runs, matched by (variant, provider, batch size, model sha256).

    ``pairs`` overrides the matching (``bench ab`` pairs its two cells explicitly: different model files
    by design). Different machines make every row ``incomparable`` unless ``cross_machine``.
    """
    tol = tolerances or Tolerances()
    if not baseline.cells:
        raise InputError("the baseline has no cells: nothing to compare")
    if not current.cells:
        raise InputError("the current run has no cells: nothing to compare")
    mb, mc = _machine_id(baseline), _machine_id(current)
    same_machine = mb is not None and mb == mc
    result = CompareResult(
        baseline=run_label(baseline, labels[0]),
        current=run_label(current, labels[1]),
        same_machine=same_machine,
        cross_machine=cross_machine,
        tolerances=tol.as_dict(),
    )
    result.warnings.extend(_config_warnings(baseline, current))
    if pairs is None:
        pairs = _match(baseline, current, result)
    dataset_ok, dataset_why = _same_dataset(baseline, current)
    for b, c in pairs:
        result.rows.extend(_compare_cells(b, c, tol, dataset_ok, dataset_why))

    if not same_machine:
        where = f"baseline machine {mb or 'unknown'} vs current {mc or 'unknown'}"
        if cross_machine:
            result.warnings.insert(
                0,
                f"different machines ({where}); compared anyway (--cross-machine): "
                "latency and memory figures may differ for reasons other than the change",
            )
        else:
            result.warnings.insert(
                0, f"runs come from different machines ({where}); pass --cross-machine to compare anyway"
            )
            for row in result.rows:
                if row.verdict != "incomparable":
                    row.why = f"different machines; would be {row.verdict}: {row.why}"
                    row.verdict = "incomparable"
    if any(r.verdict == "regression" for r in result.rows):
        result.verdict = "regression"
    elif any(r.verdict in ("same", "improvement") for r in result.rows):
        result.verdict = "pass"
    else:
        result.verdict = "incomparable"
        if same_machine or cross_machine:  # (else warnings[0] already says why: the machines)
            result.warnings.insert(
                0,
                "no cell could be compared: "
                + (
                    "no cell is in both runs with the same model"
                    if not result.rows
                    else "every matched cell is incomparable (see the rows)"
                ),
            )
    return result


def _match(baseline: RunResult, current: RunResult, result: CompareResult) -> list[tuple[CellResult, CellResult]]:
    """Pair cells by (variant, provider, batch size); a differing model sha256 is called out, not compared."""
    by_key: dict[tuple[str, str, int], CellResult] = {}
    for cell in baseline.cells:
        by_key.setdefault(cell.key, cell)
    current_keys = set()
    pairs = []
    for c in current.cells:
        current_keys.add(c.key)
        b = by_key.get(c.key)
        if b is None:
            result.unmatched.append(
                {
                    "key": cell_key(c),
                    "side": "current",
                    "sha256": _sha(c),
                    "why": "only in current (no baseline cell with this variant, provider, batch)",
                }
            )
            continue
        sb, sc = _sha(b), _sha(c)
        if sb and sc and sb != sc:
            why = (
                f"model file changed (sha256 {sb[:12]} → {sc[:12]}): not the same model, metrics not compared; "
                "refresh the baseline, or measure both with bench ab"
            )
            result.rows.append(
                CompareRow(
                    key=cell_key(c),
                    metric="model_sha256",
                    baseline=sb[:12],
                    current=sc[:12],
                    verdict="incomparable",
                    why=why,
                )
            )
            side: Side
            for side, cell, sha in (("baseline", b, sb), ("current", c, sc)):
                result.unmatched.append(
                    {"key": cell_key(cell), "side": side, "sha256": sha, "why": "model sha256 differs"}
                )
            continue
        pairs.append((b, c))
    for b in baseline.cells:
        if b.key not in current_keys:
            result.unmatched.append(
                {
                    "key": cell_key(b),
                    "side": "baseline",
                    "sha256": _sha(b),
                    "why": "only in baseline (missing from the current run)",
                }
            )
    return pairs


def _config_warnings(baseline: RunResult, current: RunResult) -> list[str]:
    out = []
    for name in _CONFIG_WATCH:
        vb, vc = baseline.config.get(name), current.config.get(name)
        if name in baseline.config and name in current.config and vb != vc:
            out.append(f"config {name} differs: baseline {vb!r}, current {vc!r}")
    ob, oc = (baseline.environment or {}).get("onnxruntime"), (current.environment or {}).get("onnxruntime")
    if ob and oc and ob != oc:
        out.append(f"onnxruntime differs: baseline {ob}, current {oc}")
    return out


def _same_dataset(baseline: RunResult, current: RunResult) -> tuple[bool, str]:
    db, dc = baseline.dataset or {}, current.dataset or {}
    fb, fc = db.get("fingerprint"), dc.get("fingerprint")
    if fb and fc and fb == fc:
        return True, ""
    if not fb or not fc:
        side = "baseline" if not fb else "current"
        return False, f"the {side} run records no dataset fingerprint: accuracy on unknown images is not compared"
    return False, (
        f"datasets differ (fingerprint {fb[:12]} n={db.get('n')} vs {fc[:12]} n={dc.get('n')}): "
        "accuracy on different images is not compared"
    )


def _compare_cells(
    b: CellResult, c: CellResult, tol: Tolerances, dataset_ok: bool, dataset_why: str
) -> list[CompareRow]:
    key = cell_key(c)
    other = cell_key(b) if cell_key(b) != key else None

    def row(**kw: Any) -> CompareRow:
        return CompareRow(key=key, baseline_key=other, **kw)

    if b.status != "ok" or c.status != "ok":
        return [_status_row(b, c, row)]
    rows: list[CompareRow] = []
    for metric, stat in LATENCY_METRICS.items():
        rows.append(_latency_row(metric, stat, b, c, tol, row))
    rows.extend(_memory_rows(b, c, tol, row))
    size = _size_row(b, c, tol, row)
    if size is not None:
        rows.append(size)
    acc = _accuracy_row(b, c, tol, dataset_ok, dataset_why, row)
    if acc is not None:
        rows.append(acc)
    return rows


def _status_row(b: CellResult, c: CellResult, row: Callable[..., CompareRow]) -> CompareRow:
    bs, cs = b.status, c.status
    if bs == "ok" and cs == "failed":
        return row(
            metric="status",
            baseline=bs,
            current=cs,
            verdict="regression",
            why=f"the cell ran in the baseline but fails now: {c.reason or 'no reason given'}",
        )
    if bs == "ok":
        why = f"current cell {cs}: {c.reason or 'no reason given'}; not compared"
    elif cs == "ok":
        why = f"baseline cell {bs}: {b.reason or 'no reason given'}; nothing to compare against"
    else:
        why = f"neither side ran (baseline {bs}: {b.reason}; current {cs}: {c.reason}); not compared"
    return row(metric="status", baseline=bs, current=cs, verdict="incomparable", why=why)


def _latency_row(
    metric: str,
    stat: Callable[[np.ndarray], float],
    b: CellResult,
    c: CellResult,
    tol: Tolerances,
    row: Callable[..., CompareRow],
) -> CompareRow:
    name = "median" if metric.endswith("p50_ms") else "p95"
    if not b.samples_ms or not c.samples_ms:
        side = "baseline" if not b.samples_ms else "current"
        lat_b, lat_c = (b.latency_ms or {}), (c.latency_ms or {})
        field_name = "p50" if name == "median" else "p95"
        return row(
            metric=metric,
            baseline=lat_b.get(field_name),
            current=lat_c.get(field_name),
            verdict="incomparable",
            why=f"the {side} cell has no raw samples_ms: no interval, no verdict",
        )
    xb = np.asarray(b.samples_ms, dtype=np.float64)
    xc = np.asarray(c.samples_ms, dtype=np.float64)
    if name == "p95":
        return _tail_row(metric, xb, xc, tol, row)
    point = stat(xc) / stat(xb)
    # bootstrap_ratio holds n_boot × n indices per side: long --min-time runs are thinned (a seeded random
    # subset, which only widens the interval) and given fewer resamples, so memory stays ~100 MB.
    rng = np.random.default_rng(0)
    sb, sc = (x if x.size <= _MAX_BOOT_SAMPLES else rng.choice(x, _MAX_BOOT_SAMPLES, replace=False) for x in (xb, xc))
    n_boot = max(500, min(tol.n_boot, _MAX_BOOT_ELEMENTS // max(sb.size, sc.size)))
    _, low, high = bootstrap_ratio(sc, sb, statistic=stat, n_boot=n_boot, confidence=tol.confidence)
    low, high = round(low, 4), round(high, 4)  # the why text shows the interval as the table does
    verdict, why = latency_verdict(point, low, high, tol.latency, name)
    return row(
        metric=metric,
        baseline=_r(stat(xb), 5),
        current=_r(stat(xc), 5),
        ratio=_r(point, 4),
        ci_low=_r(low, 4),
        ci_high=_r(high, 4),
        verdict=verdict,
        why=why,
    )


def chunk_p95s(x: np.ndarray) -> np.ndarray:
    """p95 of each contiguous chunk of ``TAIL_CHUNK`` calls (time order), at most ``MAX_TAIL_CHUNKS`` chunks."""
    k = min(MAX_TAIL_CHUNKS, x.size // TAIL_CHUNK)
    return np.array([_p95(part) for part in np.array_split(x, k)])


def _tail_row(
    metric: str, xb: np.ndarray, xc: np.ndarray, tol: Tolerances, row: Callable[..., CompareRow]
) -> CompareRow:
    """p95 as the median over contiguous chunks of each chunk's p95, with a bootstrap over chunks.

    A tail is a handful of calls, and on a shared machine slow calls come in bursts (a neighbour's
    load), not one by one: resampling single calls calls one burst "significant" (a quarter of A/A
    pairs here). A burst moves one chunk's p95; a real tail regression moves every chunk's.
    """
    n = min(xb.size, xc.size)
    if n < MIN_TAIL_CHUNKS * TAIL_CHUNK:
        return row(
            metric=metric,
            baseline=_r(_p95(xb), 5),
            current=_r(_p95(xc), 5),
            ratio=_r(_p95(xc) / _p95(xb), 4),
            verdict="incomparable",
            why=f"{n} calls: too few for a p95 verdict (needs ≥ {MIN_TAIL_CHUNKS * TAIL_CHUNK} per side)",
        )
    pb, pc = chunk_p95s(xb), chunk_p95s(xc)
    point, low, high = bootstrap_ratio(pc, pb, n_boot=tol.n_boot, confidence=tol.confidence)
    low, high = round(low, 4), round(high, 4)
    verdict, why = latency_verdict(point, low, high, tol.latency, "p95")
    why += f" (p95 = median of {min(pb.size, pc.size)} per-{TAIL_CHUNK}-call p95s, robust to bursts)"
    return row(
        metric=metric,
        baseline=_r(float(np.median(pb)), 5),
        current=_r(float(np.median(pc)), 5),
        ratio=_r(point, 4),
        ci_low=low,
        ci_high=high,
        verdict=verdict,
        why=why,
    )


def latency_verdict(point: float, low: float, high: float, tolerance: float, name: str = "median") -> tuple[str, str]:
    """asv's rule: a regression needs the point ratio above 1 + tolerance *and* the whole interval above 1."""
    limit_hi, limit_lo = 1 + tolerance, 1 / (1 + tolerance)
    ci = f"[{low:.3f}, {high:.3f}]"
    if point > limit_hi and low > 1:
        return "regression", f"{name} ×{point:.3f} > {limit_hi:.3f} and interval {ci} above 1"
    if point < limit_lo and high < 1:
        return "improvement", f"{name} ×{point:.3f} < {limit_lo:.3f} and interval {ci} below 1"
    if point > limit_hi or point < limit_lo:
        return "same", f"{name} ×{point:.3f} beyond tolerance but interval {ci} includes 1: noise, not a verdict"
    if low > 1 or high < 1:
        return "same", f"{name} ×{point:.3f} within ±{tolerance:.0%} (a real but small difference, interval {ci})"
    return "same", f"{name} ×{point:.3f} within ±{tolerance:.0%}, interval {ci}"


def _plain_verdict(ratio: float, tolerance: float, what: str) -> tuple[str, str]:
    hi, lo = 1 + tolerance, 1 / (1 + tolerance)
    if ratio > hi:
        return "regression", f"{what} ×{ratio:.3f} > {hi:.3f}"
    if ratio < lo:
        return "improvement", f"{what} ×{ratio:.3f} < {lo:.3f}"
    return "same", f"{what} ×{ratio:.3f} within ±{tolerance:.0%}"


def _memory_rows(b: CellResult, c: CellResult, tol: Tolerances, row: Callable[..., CompareRow]) -> list[CompareRow]:
    mb, mc = b.memory or {}, c.memory or {}
    rows = []
    for metric in MEMORY_METRICS:
        vb, vc = mb.get(metric), mc.get(metric)
        if vb is None and vc is None:
            continue  # not measured on either side (a CPU cell's GPU fields, sampling off): nothing to say
        if vb is None or vc is None:
            side, mem = ("baseline", mb) if vb is None else ("current", mc)
            reason = mem.get("gpu_reason") if metric.startswith("gpu") else "sampling off or no samples"
            rows.append(
                row(
                    metric=metric,
                    baseline=vb,
                    current=vc,
                    verdict="incomparable",
                    why=f"not measured in the {side} run ({reason or 'no reason recorded'})",
                )
            )
            continue
        rows.append(_ratio_row(metric, float(vb), float(vc), tol.memory, row))
    return rows


def _size_row(b: CellResult, c: CellResult, tol: Tolerances, row: Callable[..., CompareRow]) -> CompareRow | None:
    if b.model is None or c.model is None:
        return None
    return _ratio_row("model_size_mb", float(b.model.size_mb), float(c.model.size_mb), tol.size_tol, row)


def _ratio_row(metric: str, vb: float, vc: float, tolerance: float, row: Callable[..., CompareRow]) -> CompareRow:
    if vb <= 0:
        verdict, why = ("same", "both zero") if vc <= 0 else ("incomparable", "baseline is zero: no ratio")
        return row(metric=metric, baseline=vb, current=vc, verdict=verdict, why=why)
    ratio = vc / vb
    verdict, why = _plain_verdict(ratio, tolerance, metric.removesuffix("_mb").replace("_", " "))
    return row(metric=metric, baseline=vb, current=vc, ratio=_r(ratio, 4), verdict=verdict, why=why)


def _accuracy_row(
    b: CellResult, c: CellResult, tol: Tolerances, dataset_ok: bool, dataset_why: str, row: Callable[..., CompareRow]
) -> CompareRow | None:
    ab, ac = b.accuracy or {}, c.accuracy or {}
    vb, vc = ab.get("accuracy"), ac.get("accuracy")
    if vb is None and vc is None:
        return None
    if vb is None or vc is None:
        side = "baseline" if vb is None else "current"
        return row(
            metric="accuracy",
            baseline=vb,
            current=vc,
            verdict="incomparable",
            why=f"accuracy not measured in the {side} run",
        )
    if not dataset_ok:
        return row(metric="accuracy", baseline=vb, current=vc, verdict="incomparable", why=dataset_why)
    for name in ("positive_label", "threshold"):
        if ab.get(name) != ac.get(name):
            return row(
                metric="accuracy",
                baseline=vb,
                current=vc,
                verdict="incomparable",
                why=f"{name} differs ({ab.get(name)!r} vs {ac.get(name)!r}): decisions are not comparable",
            )
    delta = (float(vc) - float(vb)) * 100.0
    test = mcnemar(ab, ac)
    alpha = 1 - tol.confidence
    p = None if test is None else test["p_value"]
    tested = "" if test is None else f"; McNemar p={p:.3g} (discordant {test['b']}↓/{test['c']}↑)"
    beyond = abs(delta) > tol.accuracy_pt
    significant = p is None or p < alpha
    if beyond and significant:
        verdict = "regression" if delta < 0 else "improvement"
        why = f"{delta:+.2f} pt beyond ±{tol.accuracy_pt:g} pt{tested}"
    elif beyond:
        verdict, why = "same", f"{delta:+.2f} pt beyond ±{tol.accuracy_pt:g} pt but not significant{tested}"
    else:
        verdict, why = "same", f"{delta:+.2f} pt within ±{tol.accuracy_pt:g} pt{tested}"
    if test is None:
        why += "; no per-image predictions on both sides, no paired test"
    return row(
        metric="accuracy",
        baseline=_r(float(vb), 5),
        current=_r(float(vc), 5),
        ratio=None,
        delta=_r(delta, 3),
        p_value=None if p is None else _r(p, 5),
        verdict=verdict,
        why=why,
    )


def mcnemar(base_acc: Mapping[str, Any], cur_acc: Mapping[str, Any]) -> dict[str, Any] | None:
    """Exact McNemar (binomial on discordant pairs) on per-image correctness; None without predictions on both."""
    pb, pc = _correctness(base_acc), _correctness(cur_acc)
    if pb is None or pc is None:
        return None
    common = pb.keys() & pc.keys()
    if not common:
        return None
    worse = sum(1 for k in common if pb[k] and not pc[k])  # right before, wrong now
    better = sum(1 for k in common if not pb[k] and pc[k])
    n = worse + better
    if n == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(min(worse, better), n, 0.5).pvalue)
    return {"b": worse, "c": better, "n": len(common), "p_value": min(1.0, p)}


def _correctness(acc: Mapping[str, Any]) -> dict[str, bool] | None:
    preds = acc.get("predictions")
    if not preds:
        return None
    threshold = acc.get("threshold")
    threshold = 0.5 if threshold is None else float(threshold)
    positive = acc.get("positive_label")
    out: dict[str, bool] = {}
    for p in preds:
        if "correct" in p:
            out[str(p["path"])] = bool(p["correct"])
            continue
        if p.get("pred") is not None and p.get("label") is not None:  # bench.evaluate's shape: class names
            out[str(p["path"])] = str(p["pred"]) == str(p["label"])
            continue
        if p.get("p_fake") is None or p.get("label") is None:
            continue
        out[str(p["path"])] = (float(p["p_fake"]) >= threshold) == _is_positive(p["label"], positive)
    return out or None


def _is_positive(label: Any, positive: Any) -> bool:
    if isinstance(label, bool):
        return label
    if positive is not None:
        return str(label).lower() == str(positive).lower()
    return str(label).lower() in ("1", "true", "fake")


def _r(value: float | None, digits: int) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


# --- output ---------------------------------------------------------------------------------------

_ICON = {
    "regression": "❌ regression",
    "improvement": "✅ improvement",
    "same": "same",
    "incomparable": "⚠️ incomparable",
}
_HEAD = {"pass": "✅ pass", "regression": "❌ regression", "incomparable": "⚠️ incomparable"}
_METRIC_TEXT = {
    "latency_p50_ms": "p50 latency (ms)",
    "latency_p95_ms": "p95 latency (ms)",
    "rss_peak_mb": "RSS peak (MB)",
    "gpu_process_peak_mb": "GPU process peak (MB)",
    "gpu_device_peak_mb": "GPU device peak (MB)",
    "model_size_mb": "model size (MB)",
    "accuracy": "accuracy (%)",
    "status": "status",
    "model_sha256": "model sha256",
}


def _key_text(key: CellKey) -> str:
    return f"{key['variant']} · {key['provider']} · b{key['batch_size']}"


def _value(metric: str, value: Any) -> str:
    if value is None:
        return "—"
    if metric == "accuracy":
        return f"{float(value) * 100:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: CompareResult, title: str = "bench compare") -> str:
    """A Markdown report for a PR comment or a GitHub job summary."""

    def side(label: RunLabel) -> str:
        where = f"`{label['path']}` " if label.get("path") else ""
        return f"{where}({label.get('run_id') or '?'}, {label.get('created') or '?'})"

    t = result.tolerances
    lines = [
        f"### {title}: {_HEAD.get(result.verdict, result.verdict)}",
        "",
        f"baseline {side(result.baseline)} · current {side(result.current)}  ",
        ("machine: same (`" + str(result.current.get("machine_id")) + "`)  ")
        if result.same_machine
        else (
            f"⚠️ **different machines** (`{result.baseline.get('machine_id')}` vs "
            f"`{result.current.get('machine_id')}`)"
            + (" — compared anyway (--cross-machine)  " if result.cross_machine else " — not compared  ")
        ),
        f"tolerances: latency {t.get('latency', 0):.0%} · accuracy {t.get('accuracy_pt', 0):g} pt · "
        f"memory {t.get('memory', 0):.0%} · size {t.get('size', 0):.0%} · "
        f"{t.get('confidence', 0.95):.0%} bootstrap intervals of the ratio current/baseline",
        "",
    ]
    if result.rows:
        lines += [
            "| cell | metric | baseline | current | change | interval | verdict | why |",
            "|---|---|---:|---:|---:|---:|---|---|",
        ]
        for r in result.rows:
            cell = _key_text(r.key) + (f" vs {_key_text(r.baseline_key)}" if r.baseline_key else "")
            if r.delta is not None:
                change = f"{r.delta:+.2f} pt"
            elif r.ratio is not None:
                change = f"×{r.ratio:.3f}"
            else:
                change = "—"
            interval = (
                f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
                if r.ci_low is not None and r.ci_high is not None
                else (f"p={r.p_value:.3g}" if r.p_value is not None else "—")
            )
            lines.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        cell,
                        _METRIC_TEXT.get(r.metric, r.metric),
                        _value(r.metric, r.baseline),
                        _value(r.metric, r.current),
                        change,
                        interval,
                        _ICON.get(r.verdict, r.verdict),
                        r.why,
                    )
                )
                + " |"
            )
    else:
        lines.append("_no cell in both runs_")
    if result.unmatched:
        lines += ["", "**Unmatched cells** (not compared):", ""]
        for u in result.unmatched:
            sha256 = u.get("sha256")
            sha = f" sha256 `{sha256[:12]}`" if sha256 else ""
            lines.append(f"- `{_key_text(u['key'])}` — {u['side']}{sha}: {u['why']}")
    if result.warnings:
        lines += ["", "**Warnings:**", ""] + [f"- ⚠️ {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def compare_schema() -> dict[str, Any]:
    """JSON Schema of what ``bench compare --json`` / ``bench ab --json`` print (CompareResult)."""
    return schema_of(CompareResult, "bench compare/ab result (CompareResult)")


__all__ = [
    "CompareResult",
    "CompareRow",
    "Tolerances",
    "compare_runs",
    "compare_schema",
    "latency_verdict",
    "load_pair",
    "mcnemar",
    "parse_tolerance",
    "render_markdown",
]
