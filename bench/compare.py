"""Baseline vs current: noise-aware regression verdicts (asv's rule: a factor *and* significance).

Latency is judged from the raw samples of both sides: a percentile-bootstrap interval of the ratio of
medians (and of p95) must lie wholly above 1 *and* the point ratio must exceed ``1 + tolerance`` before a
cell is called a regression (improvements symmetrically). Accuracy is a delta in points, backed by an
exact McNemar test when both sides stored per-image predictions. Memory and model size are plain
tolerances: they are not noisy enough to need an interval.

A comparison is a *family* of tested rows (latency intervals and McNemar tests, cells × metrics), and a gate
fails on any one of them: at 5 % per row, 32 rows would give about 1.6 false findings per A/A comparison. So
the family is controlled with **Holm's step-down** (the family-wise error rate: a false row in at most 1 A/A
comparison in 20), not Benjamini–Hochberg (the false rows' *share* among those flagged): one false regression
fails a release however many true ones sit beside it, under BH a real regression loosens the bar for every
other row, and Holm holds for any dependence between rows (a cell's p50 and p95 share their samples). Each row
is judged on its interval at its own Holm level (1 - α/m for the smallest p, …): every verdict, "same"
(interval inside the tolerance band) included, is read off that one interval, and a row's ``p_value`` is the
level at which its interval would touch 1. Cells measured by separate processes also differ by what the
replicates inside one cannot see: a cross-run matrix's cells show it in the spread of their ratios, which is
added to every interval (as a ``bench calibrate`` spread is). A tail statistic measured on two contended sides
(bench's threads shared the CPUs with others) is the neighbours' scheduling: inconclusive whatever it reads.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from typing_extensions import TypedDict

from bench import stats
from bench.cluster import cell_machine_id, machine_class
from bench.environment import machine_id
from bench.errors import InputError, VerdictFailed
from bench.noise import load_difference
from bench.options import RunOptions
from bench.results import (
    SCHEMA_VERSION,
    CellKey,
    CellResult,
    RunResult,
    SequentialRecord,
    schema_of,
    validate_results,
)
from bench.robustness_compare import perturbed_accuracy_rows
from bench.settings import keys_with_role
from bench.validity import parse_results_text

Verdict = Literal["regression", "improvement", "same", "inconclusive", "incomparable"]
Side = Literal["baseline", "current"]
MemoryMetric = Literal["rss_peak_mb", "gpu_process_peak_mb", "gpu_device_peak_mb"]
MEMORY_METRICS: tuple[MemoryMetric, ...] = ("rss_peak_mb", "gpu_process_peak_mb", "gpu_device_peak_mb")
# Config fields whose difference makes latency figures measure different things: warned about.
_CONFIG_WATCH = keys_with_role(RunOptions, "watch")  # settings whose difference bench compare warns about


LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms")


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
    confidence: float = 0.95  # of the bootstrap interval, and 1 - alpha of the McNemar test: for the whole family
    n_boot: int = 2000
    family: Literal["holm", "none"] = "holm"  # "none": every row alone at ``confidence``, no spread read from cells

    def __post_init__(self) -> None:
        for name in ("latency", "accuracy_pt", "memory"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} tolerance must be ≥ 0")
        if not 0.5 < self.confidence < 1:
            raise InputError("confidence must be between 0.5 and 1")
        if self.family not in ("holm", "none"):
            raise InputError(f"family control {self.family!r} is not known (holm or none)")

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


class RunToRun(TypedDict):
    """What separate processes add to a latency metric's ratios, beyond the replicates inside one (per side, log)."""

    sigma: float  # added to every interval of the metric, as a calibration's sigma_run is
    source: Literal["calibration", "cells"]  # bench calibrate's figure, or the spread of this comparison's cells
    cells: int  # cells whose ratios the spread was read from


class FamilyControl(TypedDict):
    """How the tested rows (latency intervals, McNemar tests) are held together as one family."""

    method: Literal["holm", "none"]  # holm: family-wise error rate; none: every row at the confidence alone
    why: str
    rows: int  # the family: rows judged by a test (status, memory and size rows are plain tolerances)
    alpha: float  # family-wise: 1 - confidence
    expected_false: float  # at most this many false findings among the rows when nothing truly differs
    expected_false_unadjusted: float  # the same, had each row been judged alone at alpha (rows × alpha)
    run_to_run: dict[str, RunToRun]  # per latency metric, when a spread between processes was added


class Symmetry(TypedDict):
    """Which way the tested rows went: under A/A, regressions and improvements (and slower and faster
    ratios) are equally common; a family that leans one way moved as a whole."""

    regressions: int
    improvements: int
    slower: int  # tested latency rows whose ratio is above 1
    faster: int  # ... below 1
    sign_p: float | None  # two-sided sign test of slower vs faster (None without such rows)


_OPTIONAL_ROW_FIELDS = (
    "baseline_key",
    "mde",
    "replicates_needed",
    "resampled",
    "cv_between",
    "cv_within",
    "noisy",
    "level",
    "p_adjusted",
    "explanation",
)


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
    p_value: float | None = None  # accuracy: exact McNemar; latency: the level at which the interval touches 1
    baseline_key: CellKey | None = None  # bench ab with --against-variant: the other side's cell (omitted if None)
    # latency rows (omitted when None): the noise behind the verdict
    mde: float | None = None  # minimum detectable slowdown at this noise (fraction; 0.08 = +8 %), 80 % power
    replicates_needed: int | None = None  # inconclusive: replicates (or blocks) per side that would decide it
    resampled: str | None = None  # the bootstrap's top-level unit: "replicates" or "blocks" (older files)
    cv_between: list[float | None] | None = None  # [baseline, current] CV of replicate medians
    cv_within: list[float | None] | None = None  # [baseline, current] median CV of calls within a replicate
    noisy: list[Side] | None = None  # sides measured while other processes used the CPU (cell.noise)
    # tested rows (omitted otherwise): their place in the family
    level: float | None = None  # the confidence of this row's interval and test: its Holm level (0.9984 = 1 - α/32)
    p_adjusted: float | None = None  # Holm-adjusted p: a finding of the family exactly when ≤ alpha
    # latency regressions (omitted otherwise): the top op-type deltas of both sides' profiles (bench.profile.explain)
    explanation: dict[str, Any] | None = None


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
    calibration: dict[str, Any] | None = None  # the bench calibrate figures used (cross-run), if any
    family: FamilyControl | None = None  # how the tested rows were held together (None: no row was tested)
    symmetry: Symmetry | None = None  # which way the tested rows went
    sequential: SequentialRecord | None = None  # bench ab --sequential: its looks and why it stopped (else omitted)

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "regression": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data.get("sequential") is None:
            data.pop("sequential", None)
        for row in data["rows"]:
            for optional in _OPTIONAL_ROW_FIELDS:
                if row.get(optional) is None:
                    row.pop(optional, None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def regressions(self) -> list[CompareRow]:
        return [r for r in self.rows if r.verdict == "regression"]

    @property
    def inconclusive(self) -> list[CompareRow]:
        return [r for r in self.rows if r.verdict == "inconclusive"]

    def summary_line(self) -> str:
        """One line for a log: the verdict and how many rows were inconclusive (noise hid the answer)."""
        counts = {v: sum(r.verdict == v for r in self.rows) for v in ("regression", "improvement", "same")}
        text = f"{self.verdict}: " + ", ".join(f"{n} {v}" for v, n in counts.items())
        text += f", {len(self.inconclusive)} inconclusive"
        text += " (noise hid the answer: see each row's MDE and replicates needed)" if self.inconclusive else ""
        return text + "".join(f" · {part}" for part in family_lines(self))

    def raise_for_verdict(self, fail_on_inconclusive: bool = False) -> None:
        """Exit code as CLI.md says: 1 (VerdictFailed) on a regression, 2 (InputError) when incomparable;
        inconclusive rows exit 0 unless ``fail_on_inconclusive`` (then 1)."""
        if self.verdict == "pass" and fail_on_inconclusive and self.inconclusive:
            rows = self.inconclusive
            first = "; ".join(f"{_key_text(r.key)} {r.metric}: {r.why}" for r in rows[:3])
            raise VerdictFailed(f"{len(rows)} inconclusive row(s) (--fail-on-inconclusive): {first}")
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
            data = parse_results_text(p.read_text(encoding="utf-8"), f"{side} {p}")  # depth, NaN refused
        except FileNotFoundError as exc:
            raise InputError(f"{side} results file {p} not found") from exc
        except (OSError, UnicodeDecodeError) as exc:
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
        runs.append(validate_results(data, source=f"{side} {p}"))  # the contract, as every command reads it
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
    calibration: Mapping[str, Any] | None = None,
    latency_by_sequence: bool = False,
) -> CompareResult:
    """Verdicts for every cell present in both runs, matched by (variant, provider, batch size, model sha256).

    ``pairs`` overrides the matching (``bench ab`` pairs its two cells explicitly: different model files
    by design). Different machines make every row ``incomparable`` unless ``cross_machine``.
    ``calibration`` (``bench calibrate``'s object, made on this machine) widens cross-run latency
    intervals by its measured run-to-run spread; one made on another machine is named and not used.
    ``latency_by_sequence``: the latency rows get their point ratios only, no bootstrap and no place in the
    family — a sequential ``bench ab`` judges them on its confidence sequences (bench.ab.apply_sequential),
    and the bootstrap it would discard costs ~1 s on a µs model's 80,000 calls a side.
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
    cross_run = pairs is None  # cells matched across two runs (not bench ab's interleaved pair)
    if pairs is None:
        pairs = _match(baseline, current, result)
    dataset_ok, dataset_why = _same_dataset(baseline, current)
    sigma_run = _calibrated_sigma(calibration, mc, result) if calibration is not None else 0.0
    pending: list[_Pending] = []
    for b, c in pairs:
        result.rows.extend(_compare_cells(b, c, tol, dataset_ok, dataset_why, pending, latency_by_sequence))
    _isolation_rows(baseline, current, result)
    if cross_run and baseline.run_id and baseline.run_id == current.run_id:
        result.warnings.insert(0, f"both sides are the same run ({baseline.run_id}): every row compares it with itself")
    _judge_family(result, pending, tol, sigma_run, cross_run)
    for side, run in (("baseline", baseline), ("current", current)):
        noisy = [
            f"{_key_text(cell_key(c))} ({(c.noise or {}).get('why')})"
            for c in run.cells
            if (c.noise or {}).get("noisy")
        ]
        if noisy:
            result.warnings.append(f"the {side} run was measured on a noisy machine: " + "; ".join(noisy[:3]))

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
    result.symmetry = sym = row_symmetry(result.rows)
    if cross_run and sym["sign_p"] is not None and sym["sign_p"] < 1.0 - tol.confidence:
        result.warnings.append(
            f"the rows lean one way ({sym['slower']} slower, {sym['faster']} faster; sign test p={sym['sign_p']:.2g}): "
            "a shift common to the cells, from a change that touches them all or from the machine's state between "
            "the runs, which separate runs cannot tell apart: measure both sides in one job (bench ab)"
        )
    if any(r.verdict == "regression" for r in result.rows):
        result.verdict = "regression"
    elif any(r.verdict in ("same", "improvement", "inconclusive") for r in result.rows):
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


# Where a command measured a cell's memory: the process's RSS includes what else that process holds.
_ISOLATION = {"matrix": "a fresh process per cell", "run": "the bench CLI's own process"}


def _isolation_rows(baseline: RunResult, current: RunResult, result: CompareResult) -> None:
    """RSS measured under different isolation (a matrix cell's own process vs ``bench run``'s CLI process, which
    also holds click, the report libraries, …) differs without any change to the model: incomparable, not a
    regression."""
    cb, cc = baseline.config.get("command"), current.config.get("command")
    ib, ic = _ISOLATION.get(str(cb)), _ISOLATION.get(str(cc))
    if ib is None or ic is None or ib == ic:
        return
    for row in result.rows:
        if row.metric == "rss_peak_mb" and row.verdict != "incomparable":
            row.why = f"RSS measured under different isolation ({cb}: {ib}; {cc}: {ic}); would be {row.verdict}"
            row.verdict = "incomparable"


def _calibrated_sigma(calibration: Mapping[str, Any], machine: str | None, result: CompareResult) -> float:
    """The run-to-run spread a calibration measured on this machine; 0 (and a warning) when it does not apply."""
    where = calibration.get("machine_id")
    if where != machine:
        result.warnings.append(
            f"calibration made on another machine ({where}, this run: {machine}): not used; run bench calibrate here"
        )
        return 0.0
    sigma = float((calibration.get("cross_run") or {}).get("sigma_run") or 0.0)
    result.calibration = {"machine_id": where, "sigma_run": sigma, "created": calibration.get("created")}
    return sigma


_FAMILY_WHY = {
    "holm": "Holm's step-down, the family-wise error rate: a gate fails on any one false row, so a false row "
    "anywhere in the family is what must stay rare (at most α), whatever its share among the rows flagged "
    "(Benjamini–Hochberg's measure, under which a real regression loosens the bar for every other row); "
    "Holm holds for any dependence between rows (a cell's p50 and p95 share their samples)",
    "none": "each row judged alone at the confidence level, with no spread read from the other cells: the "
    "expected false findings grow with the rows",
}


def _judge_family(
    result: CompareResult, pending: list[_Pending], tol: Tolerances, calibrated: float, cross_run: bool
) -> None:
    """Verdicts of the tested rows (latency intervals, McNemar tests) as one family: each at its Holm level,
    latency intervals widened by the run-to-run spread; then ``result.family``."""
    alpha = 1.0 - tol.confidence
    spread = _run_to_run(pending, tol, calibrated, cross_run and tol.family != "none")
    sigma = {metric: entry["sigma"] for metric, entry in spread.items()}
    latency = [p for p in pending if p.estimate.usable]
    accuracy = [r for r in result.rows if r.metric.startswith("accuracy") and r.p_value is not None]
    p_values = [_p_or_one(stats.ratio_p_value(p.estimate, sigma.get(p.row.metric, 0.0))) for p in latency]
    p_values += [_p_or_one(r.p_value) for r in accuracy]
    m = len(p_values)
    holm = tol.family == "holm"
    levels = stats.holm_levels(p_values, alpha) if holm else [alpha] * m
    adjusted = stats.holm_adjusted(p_values) if holm else list(p_values)

    def family_text(level: float) -> str:
        return f"; at {(1 - level) * 100:.4g}%: Holm over {m} rows" if holm and m > 1 else ""

    for i, p in enumerate(latency):
        metric = p.row.metric
        _judge_latency(
            p, tol, 1 - levels[i], sigma.get(metric, 0.0), _sigma_text(spread.get(metric)), family_text(levels[i])
        )
        p.row.level, p.row.p_value, p.row.p_adjusted = _r(1 - levels[i], 6), _sig(p_values[i]), _sig(adjusted[i])
    for p in pending:
        if not p.estimate.usable:  # n too small: inconclusive, outside the family
            _judge_latency(p, tol, tol.confidence, 0.0, "", "")
    for j, row in enumerate(accuracy, start=len(latency)):
        if holm and m > 1 and row.delta is not None:
            verdict, head = _accuracy_verdict(row.delta, row.p_value, tol.accuracy_pt, levels[j])
            tail = row.why[row.why.find("; McNemar") :] if "; McNemar" in row.why else ""
            row.verdict, row.why = verdict, head + tail + f"; Holm level α {levels[j]:.3g} over {m} rows"
        row.level, row.p_adjusted = _r(1 - levels[j], 6), _sig(adjusted[j])
    result.family = {
        "method": tol.family,
        "why": _FAMILY_WHY[tol.family],
        "rows": m,
        "alpha": _r(alpha, 6) or 0.0,
        "expected_false": _r(alpha if holm and m else m * alpha, 4) or 0.0,
        "expected_false_unadjusted": _r(m * alpha, 4) or 0.0,
        "run_to_run": spread,
    }


def _run_to_run(pending: list[_Pending], tol: Tolerances, calibrated: float, cross_run: bool) -> dict[str, RunToRun]:
    """Per latency metric, what separate processes add to every ratio: the calibration's σ, or the spread of this
    comparison's own cells (cross-run, enough cells) when that is larger. bench ab's sides share one job: none."""
    out: dict[str, RunToRun] = {}
    for metric in LATENCY_METRICS:
        usable = [p.estimate for p in pending if p.row.metric == metric and p.estimate.usable]
        seen = None
        if cross_run and usable:
            seen = stats.spread_between_runs(
                [math.log(e.point or 1.0) for e in usable],
                [(e.se_log or 0.0) / stats.small_sample_factor(min(e.groups), tol.confidence) for e in usable],
            )
        if seen is not None and seen >= calibrated:
            out[metric] = {"sigma": _r(seen, 4) or 0.0, "source": "cells", "cells": len(usable)}
        elif calibrated > 0:
            out[metric] = {"sigma": calibrated, "source": "calibration", "cells": len(usable)}
    return out


def _p_or_one(p: float | None) -> float:
    return 1.0 if p is None else float(p)


def _sigma_text(entry: RunToRun | None) -> str:
    if entry is None or entry["sigma"] <= 0:
        return ""
    if entry["source"] == "calibration":
        return f"calibrated run-to-run σ {entry['sigma'] * 100:.1f}%"
    return f"run-to-run σ {entry['sigma'] * 100:.1f}% seen across {entry['cells']} cells"


def row_symmetry(rows: list[CompareRow]) -> Symmetry:
    """Which way the family's rows went (counted over the tested rows, after every demotion)."""
    tested = [r for r in rows if r.level is not None]
    ratios = [r.ratio for r in tested if r.ratio is not None]
    slower, faster = sum(x > 1 for x in ratios), sum(x < 1 for x in ratios)
    sign_p = None
    if slower + faster:  # exact two-sided binomial at 1/2 (symmetric: twice the smaller tail), without scipy.stats
        from scipy.special import bdtr

        sign_p = _sig(min(1.0, 2.0 * float(bdtr(min(slower, faster), slower + faster, 0.5))))
    return {
        "regressions": sum(r.verdict == "regression" for r in tested),
        "improvements": sum(r.verdict == "improvement" for r in tested),
        "slower": slower,
        "faster": faster,
        "sign_p": sign_p,
    }


def _match(baseline: RunResult, current: RunResult, result: CompareResult) -> list[tuple[CellResult, CellResult]]:
    """Pair cells by (variant, provider, batch size); a differing model sha256 is called out, not compared, and
    so are two cells a cluster ran on different machines (each carries its own), unless --cross-machine."""
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
        mb, mc = cell_machine_id(b) or _machine_id(baseline), cell_machine_id(c) or _machine_id(current)
        if (b.placement or c.placement) and mb != mc and not result.cross_machine:
            cb, cc = machine_class(b, baseline), machine_class(c, current)
            result.rows.append(
                CompareRow(
                    key=cell_key(c),
                    metric="machine",
                    baseline=cb,
                    current=cc,
                    verdict="incomparable",
                    why=f"measured on different machines ({cb} `{mb}` vs {cc} `{mc}`), metrics not compared; pin "
                    "the machine class (--ray-resources) or pass --cross-machine to compare anyway",
                )
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
    b: CellResult,
    c: CellResult,
    tol: Tolerances,
    dataset_ok: bool,
    dataset_why: str,
    pending: list[_Pending],
    latency_by_sequence: bool = False,
) -> list[CompareRow]:
    key = cell_key(c)
    other = cell_key(b) if cell_key(b) != key else None

    def row(**kw: Any) -> CompareRow:
        return CompareRow(key=key, baseline_key=other, **kw)

    if b.status != "ok" or c.status != "ok":
        return [_status_row(b, c, row)]
    rows: list[CompareRow] = []
    for metric in LATENCY_METRICS:
        rows.append(_latency_row(metric, b, c, tol, row, pending, latency_by_sequence))
    rows.extend(_memory_rows(b, c, tol, row))
    size = _size_row(b, c, tol, row)
    if size is not None:
        rows.append(size)
    acc = _accuracy_row(b, c, tol, dataset_ok, dataset_why, row)
    if acc is not None:
        rows.append(acc)
    rows.extend(perturbed_accuracy_rows(b, c, lambda pb, pc: _accuracy_row(pb, pc, tol, dataset_ok, dataset_why, row)))
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


@dataclass
class _Pending:
    """A latency row whose verdict waits for its family: the estimate at the base level and the two cells."""

    row: CompareRow
    estimate: stats.RatioEstimate
    name: str  # the statistic: "median" or "p95"
    b: CellResult
    c: CellResult


def _latency_row(
    metric: str,
    b: CellResult,
    c: CellResult,
    tol: Tolerances,
    row: Callable[..., CompareRow],
    pending: list[_Pending],
    by_sequence: bool = False,
) -> CompareRow:
    """The ratio of a latency statistic with its hierarchical bootstrap; the verdict comes with the family
    (``by_sequence``: the point ratio only, judged later on a confidence sequence)."""
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
    gb, unit_b = stats.replicate_groups(b.samples_ms, b.sample_replicates or None)
    gc, unit_c = stats.replicate_groups(c.samples_ms, c.sample_replicates or None)
    unit = unit_b if unit_b == unit_c else "blocks"
    if unit_b != unit_c:  # one side has replicates, the other not: resample both as blocks of calls
        gb, _ = stats.replicate_groups(b.samples_ms, None)
        gc, _ = stats.replicate_groups(c.samples_ms, None)
    q = stats.statistic_of(name)
    at_b, at_c = stats.quantile(b.samples_ms, q), stats.quantile(c.samples_ms, q)
    if by_sequence:
        est = stats.RatioEstimate(
            statistic=name,
            point=at_c / at_b,
            low=None,
            high=None,
            se_log=None,
            unit=unit,
            groups=(len(gb), len(gc)),
            n=(len(b.samples_ms), len(c.samples_ms)),
            too_small="judged on the sequential design's confidence sequence",
        )
    else:
        est = stats.ratio_interval(gc, gb, name, n_boot=tol.n_boot, confidence=tol.confidence, unit=unit)
    noise_b, noise_c = stats.noise_components(gb), stats.noise_components(gc)
    sides: tuple[tuple[Side, CellResult], ...] = (("baseline", b), ("current", c))
    noisy: list[Side] = [side for side, cell in sides if (cell.noise or {}).get("noisy")]
    made = row(
        metric=metric,
        baseline=_r(at_b, 5),
        current=_r(at_c, 5),
        verdict="inconclusive",  # until _judge_latency
        resampled=unit,
        cv_between=_pair(noise_b.cv_between, noise_c.cv_between),
        cv_within=_pair(noise_b.cv_within, noise_c.cv_within),
        noisy=noisy or None,
    )
    pending.append(_Pending(made, est, name, b, c))
    return made


def _judge_latency(p: _Pending, tol: Tolerances, level: float, sigma: float, sigma_text: str, family_text: str) -> None:
    """The four-way verdict of one latency row on its interval at ``level`` (its Holm level), then what the
    sides' noise takes away: a load difference, or two contended sides under a tail statistic."""
    est = stats.at_confidence(p.estimate, level, sigma)
    decided = stats.decide(est, tol.latency, level, p.name)
    if sigma > 0 and decided.verdict == "inconclusive" and decided.replicates_needed:
        # more replicates cannot shrink what differs between processes: only measuring both in one job can
        head = decided.why.split(";")[0]
        decided = replace(
            decided,
            replicates_needed=None,
            why=f"{head}; the run-to-run spread dominates: measure both sides in one job (bench ab)",
        )
    load = load_difference(p.b.noise, p.c.noise)
    if load and decided.verdict in ("regression", "improvement"):
        decided = replace(
            decided,
            verdict="inconclusive",
            why=f"inconclusive: {decided.why.split(';')[0]}, but the sides were measured under different load "
            f"({load}): the difference may be the load's",
        )
    contended = all((cell.noise or {}).get("contended") for cell in (p.b, p.c))
    if contended and stats.statistic_of(p.name) > 0.5 and decided.verdict != "inconclusive":
        decided = replace(
            decided,
            verdict="inconclusive",
            replicates_needed=None,
            why=f"inconclusive: {decided.why.split(';')[0]}, but both sides were contended (bench's threads "
            "shared the CPUs with other processes): a tail then times the neighbours' scheduling, not the model; "
            "measure with fewer threads (--threads 1) or on a quiet machine",
        )
    groups = p.estimate.groups
    why = decided.why + f" (two-level bootstrap over {p.estimate.unit}: {groups[0]} vs {groups[1]}"
    why += family_text + (f"; widened by the {sigma_text})" if sigma_text else ")")
    for side in p.row.noisy or []:
        cell = p.b if side == "baseline" else p.c
        why += f"; {side} measured on a noisy machine ({(cell.noise or {}).get('why')})"
    p.row.ratio, p.row.ci_low, p.row.ci_high = _r(est.point, 4), _r(est.low, 4), _r(est.high, 4)
    p.row.verdict = cast(Verdict, decided.verdict)
    p.row.why = why
    p.row.mde = _r(decided.mde, 4)
    p.row.replicates_needed = decided.replicates_needed


def _pair(baseline: float | None, current: float | None) -> list[float | None] | None:
    """[baseline, current] of a noise figure, rounded; None when neither side has it."""
    if baseline is None and current is None:
        return None
    return [_r(baseline, 4), _r(current, 4)]


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
    p = None if test is None else test["p_value"]
    tested = "" if test is None else f"; McNemar p={p:.3g} (discordant {test['b']}↓/{test['c']}↑)"
    verdict, why = _accuracy_verdict(delta, p, tol.accuracy_pt, 1 - tol.confidence)
    why += tested
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


def _accuracy_verdict(delta: float, p: float | None, tolerance_pt: float, alpha: float) -> tuple[Verdict, str]:
    """A delta in points beyond the tolerance *and* significant (McNemar p < alpha, when tested) is a verdict."""
    if abs(delta) <= tolerance_pt:
        return "same", f"{delta:+.2f} pt within ±{tolerance_pt:g} pt"
    if p is not None and p >= alpha:
        return "same", f"{delta:+.2f} pt beyond ±{tolerance_pt:g} pt but not significant"
    return ("regression" if delta < 0 else "improvement"), f"{delta:+.2f} pt beyond ±{tolerance_pt:g} pt"


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


def _sig(value: float | None, digits: int = 3) -> float | None:
    """A p-value to ``digits`` significant digits (1e-9 stays 1e-9, where rounding to places would give 0)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


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
        f"{t.get('confidence', 0.95):.0%} bootstrap intervals of the ratio current/baseline"
        + (" for the whole family: each row's at its Holm level  " if _holm(result) else "  "),
        *(f"{line}  " for line in family_lines(result, long=True)),
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
            if r.level is not None and _holm(result) and r.level != t.get("confidence"):
                interval += f" at {r.level * 100:.4g}%"
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


def _holm(result: CompareResult) -> bool:
    return result.family is not None and result.family["method"] == "holm" and result.family["rows"] > 1


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def family_lines(result: CompareResult, long: bool = False) -> list[str]:
    """The family control, its expected false findings and the symmetry line (the summary line's tail; with
    ``long``, the Markdown's head, which also says what they mean)."""
    fam, sym = result.family, result.symmetry
    if not fam or not fam["rows"]:
        return []
    how = (
        f"Holm over {fam['rows']} tested rows" if fam["method"] == "holm" else f"{fam['rows']} tested rows, each alone"
    )
    lines = [
        f"{how} at α {fam['alpha']:.0%}: ≤ {fam['expected_false']:.2g} false findings expected if nothing changed "
        f"({fam['expected_false_unadjusted']:.2g} judged one by one)"
    ]
    if sym is not None:
        line = (
            f"{_count(sym['regressions'], 'regression')} vs {_count(sym['improvements'], 'improvement')}; "
            f"{sym['slower']} rows slower vs {sym['faster']} faster"
        )
        line += f" (sign test p={sym['sign_p']:.2g})" if sym["sign_p"] is not None else ""
        if long:
            line += ": under A/A both are equally common"
            if sym["sign_p"] is not None and sym["sign_p"] < fam["alpha"]:
                line += "; these lean one way: a shift common to the cells (a change that touches them all, or the "
                line += "machine's state between the runs)"
        lines.append(line)
    spread = [
        f"{_METRIC_TEXT.get(metric, metric).split(' ')[0]} σ {e['sigma'] * 100:.1f}% "
        + ("(calibration)" if e["source"] == "calibration" else f"(across {e['cells']} cells)")
        for metric, e in fam["run_to_run"].items()
    ]
    if spread:
        tail = ", added to every interval: separate processes differ by more than replicates inside one show"
        lines.append("run-to-run " + ", ".join(spread) + (tail if long else ""))
    return lines


def compare_schema() -> dict[str, Any]:
    """JSON Schema of what ``bench compare --json`` / ``bench ab --json`` print (CompareResult)."""
    return schema_of(CompareResult, "bench compare/ab result (CompareResult)")


__all__ = [
    "CompareResult",
    "CompareRow",
    "Tolerances",
    "compare_runs",
    "compare_schema",
    "family_lines",
    "load_pair",
    "mcnemar",
    "parse_tolerance",
    "render_markdown",
    "row_symmetry",
]
