"""Plan variants × providers × batch sizes, run each cell in its own process, collect a RunResult.

Each cell is measured by ``python -m bench._cell`` in a fresh process (fresh ONNX Runtime, clean
memory peaks). A crash, an out-of-memory kill or a hang (``cell_timeout_s``) of that process marks the
cell ``failed`` with the reason and the matrix goes on; a provider that cannot run here makes its cells
``unavailable``. results.json/csv are rewritten atomically after every cell, so an interrupted run keeps
what finished and ``resume=True`` skips it (same cell key and same model sha256).

Accuracy is evaluated once per (variant, provider), in the first of its cells that runs (the lowest batch
size): the model's predictions do not depend on the timed batch size, and evaluation is the slow part.

Cells run through an executor (bench.executors): ``local`` runs them one by one here; ``ray`` sends them to
a cluster, many at once. The rules above hold for both: a (variant, provider)'s other cells wait while its
evaluating cell runs, so if that one fails the next still evaluates, and results are written as cells end.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from bench import audit, datasets, environment
from bench._cell import cell_spec
from bench.bundle import Bundle, positive_index
from bench.errors import InputError
from bench.evaluate import EvalSpec, add_agreement  # EvalSpec: also imported from here (bench.cli)
from bench.executors import CellJob, Executor, LocalExecutor
from bench.formatting import fmt
from bench.modelfile import model_info, output_width
from bench.noise import combine_noise
from bench.options import parse_batch_sizes  # also imported from here (bench.cli, tests)
from bench.perturb import DEFAULT_SEED
from bench.providers import is_gpu
from bench.results import (
    CellResult,
    DatasetInfo,
    DecideCell,
    DecideRecord,
    Environment,
    ModelInfo,
    Noise,
    RunConfig,
    RunResult,
    ServiceEntry,
)
from bench.runner import ReplicateSamples, RunOptions, fit_threads
from bench.service import harness
from bench.service.harness import ServiceRunSpec
from bench.settings import config_key, keys_with_role, settings
from bench.variants import ensure_variant, recipe_names

LogFn = Callable[[str], None]

DEFAULT_PROVIDERS = "cpu,cuda,tensorrt"
DEFAULT_CELL_TIMEOUT_S = 900.0
PROBE_TIMEOUT_S = 180.0
REFERENCE_VARIANT = "fp32"
NO_EVALUATION = EvalSpec()  # latency only: no labelled set

# Config keys that change what a measurement means: a resumed run must match them (bench.settings roles).
# A matrix records batch sizes per cell, not the run-wide batch_size.
MEASURE_KEYS = (
    *(k for k in keys_with_role(RunOptions, "measure", "watch") if k != "batch_size"),
    *keys_with_role(EvalSpec, "measure", "watch"),
)
_FLAGS = {config_key(f, s): s.flag for cls in (RunOptions, EvalSpec) for f, s in settings(cls)} | {
    "perturbations": "--perturb"
}


@dataclass(frozen=True)
class CellPlan:
    variant: str
    provider: str
    batch_size: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.variant, self.provider, self.batch_size)

    @property
    def label(self) -> str:
        return f"{self.variant} · {self.provider} · batch {self.batch_size}"


def plan_cells(variants: Sequence[str], providers: Sequence[str], batch_sizes: Sequence[int]) -> list[CellPlan]:
    """Every variant × provider × batch size, variant-major (a variant's cells run together)."""
    return [CellPlan(v, p, b) for v in variants for p in providers for b in batch_sizes]


@dataclass
class MatrixOutcome:
    """What :func:`run_matrix` did: the result (as written), and whether Ctrl-C cut it short."""

    result: RunResult
    out: Path
    interrupted: bool = False
    ran: int = 0
    reused: int = 0
    planned: int = 0
    notes: list[str] = field(default_factory=list)


def run_matrix(
    bundle: Bundle,
    variants: Sequence[str],
    providers: Sequence[str],
    batch_sizes: Sequence[int],
    options: RunOptions,
    out: Path | None = None,
    evaluation: EvalSpec = NO_EVALUATION,
    policy: dict[str, Any] | None = None,
    policy_file: str | None = None,
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S,
    resume: bool = False,
    allow_build: bool = True,
    with_service: bool = False,
    log: LogFn | None = None,
    service_options: ServiceRunSpec | None = None,
    executor: Executor | None = None,
) -> MatrixOutcome:
    """Measure every cell in its own process; write results after each; never raise for a cell's trouble.

    ``executor``: where the cells run (bench.executors); default a LocalExecutor. The caller closes its own.
    Cells run here (local executor) without ``--threads`` get threads fitted to the others' load as ``bench run``
    does (config.threads_why); ``--resume`` keeps the threads the earlier run chose.
    """
    say = log or (lambda _m: None)
    if cell_timeout_s <= 0:
        raise InputError(f"--cell-timeout must be > 0 seconds, got {cell_timeout_s}")
    paths, unbuildable = _variant_files(bundle, variants, allow_build, say)
    infos: dict[str, ModelInfo] = {v: model_info(p) for v, p in paths.items()}
    dataset_info, input_images, accuracy_reason = _prepare_dataset(bundle, evaluation, next(iter(paths.values())))
    local = executor is None or executor.name == LocalExecutor.name  # a cluster's load is not this machine's
    options, threads_why = _fit_threads(options, providers, out if resume else None, say) if local else (options, None)

    config = cast(
        RunConfig,
        {
            "command": "matrix",
            "model_dir": str(bundle.root),
            "variants": list(variants),
            "providers": list(providers),
            "batch_sizes": list(batch_sizes),
            "cell_timeout_s": cell_timeout_s,
            "with_service": with_service,
            **({"service_options": (service_options or ServiceRunSpec()).as_config()} if with_service else {}),
            **{k: v for k, v in options.as_config().items() if k != "batch_size"},
            **({"threads_why": threads_why} if threads_why else {}),
            "threshold": evaluation.threshold,
            "positive_label": evaluation.positive_label,
            "accuracy_reason": accuracy_reason,
            "perturbations": list(evaluation.perturbations),
            "perturb_seed": DEFAULT_SEED,
            "reference_variant": str((policy or {}).get("reference") or REFERENCE_VARIANT),
            "policy_file": policy_file,
            "policy": policy,
            "executor": executor.name if executor is not None else LocalExecutor.name,
        },
    )
    if executor is not None and executor.describe() is not None:
        config["ray"] = executor.describe()
    result = RunResult(
        environment=cast(Environment, environment.fingerprint(options.session.provider_options.device_id)),
        config=config,
        dataset=dataset_info,
    )
    out = Path(out) if out is not None else Path("reports") / result.run_id
    previous = _load_previous(out, result, say) if resume else {}
    if resume and previous:
        config["resumed"] = True

    plan = plan_cells(variants, providers, batch_sizes)
    outcome = MatrixOutcome(result=result, out=out, planned=len(plan))
    first_round = options.first_round()  # the later rounds' replicates are appended after every cell has run
    # Finished cells by key: kept ones from --resume first, then each cell as it ends. Always written in plan
    # order, so an interrupted run (even one interrupted before reaching a kept cell) loses nothing.
    done: dict[tuple[str, str, int], CellResult] = {
        c.key: previous[c.key] for c in plan if c.variant in infos and _reusable(previous.get(c.key), infos[c.variant])
    }
    kept = set(done)
    outcome.reused = len(kept)

    interrupt = _InterruptGuard()

    def save() -> None:
        result.cells = [done[c.key] for c in plan if c.key in done]
        result.write(out)
        interrupt.raise_if_swallowed()  # after every cell: a Ctrl-C lost in a fork hook still stops the matrix

    save()
    runner: Executor = executor if executor is not None else LocalExecutor()
    # (variant, provider) pairs whose accuracy is wanted are evaluated by the first of their cells that runs
    wants_accuracy = evaluation.dataset is not None and accuracy_reason is None
    evaluated = {(c.variant, c.provider) for c in done.values() if c.accuracy is not None}
    evaluating: set[tuple[str, str]] = set()  # pairs whose evaluating cell is in flight: their other cells wait
    pending: deque[tuple[int, CellPlan]] = deque()
    in_flight: dict[tuple[str, str, int], tuple[int, CellPlan, bool, CellJob]] = {}
    durations: list[float] = []
    remaining = 0

    def submit_ready() -> None:
        for item in list(pending):
            if len(in_flight) >= runner.slots:
                return
            index, plan_cell = item
            pair = (plan_cell.variant, plan_cell.provider)
            evaluate = wants_accuracy and pair not in evaluated
            if evaluate and pair in evaluating:
                continue
            pending.remove(item)
            if evaluate:
                evaluating.add(pair)
            spec = _cell_spec(
                plan_cell,
                bundle,
                paths[plan_cell.variant],
                replace(first_round, batch_size=plan_cell.batch_size),
                input_images,
                evaluation if evaluate else None,
                infos[plan_cell.variant],
            )
            job = CellJob(plan_cell.key, spec, cell_timeout_s, _tag(plan_cell))
            runner.submit(job)
            in_flight[plan_cell.key] = (index, plan_cell, evaluate, job)

    def collect() -> None:
        nonlocal remaining
        for job, cell in runner.wait():
            index, plan_cell, evaluate, _ = in_flight.pop(job.key)
            if evaluate:
                evaluating.discard((plan_cell.variant, plan_cell.provider))
            if cell.model is None:
                cell.model = infos[plan_cell.variant]
            if cell.accuracy is not None:
                evaluated.add((plan_cell.variant, plan_cell.provider))
            durations.append(time.monotonic() - (job.started or job.submitted))  # running time, queueing aside
            remaining -= 1
            outcome.ran += 1
            done[plan_cell.key] = cell
            save()
            parallel = 1 + sum(1 for *_, other in in_flight.values() if other.started is not None)  # running now
            say(
                f"[{index}/{len(plan)}] {plan_cell.label}: {_cell_line(cell)} ({durations[-1]:.1f} s) · "
                f"ETA {_eta(durations, remaining, parallel)}"
            )
        submit_ready()

    try:
        interrupt.install()
        probes = _probe_providers(runner, {c.provider for c in plan if c.key not in kept}, say)
        remaining = sum(
            1 for c in plan if c.key not in kept and c.variant not in unbuildable and probes.get(c.provider) is None
        )
        for index, plan_cell in enumerate(plan, start=1):
            prefix = f"[{index}/{len(plan)}] {plan_cell.label}"
            if plan_cell.key in kept:
                say(f"{prefix}: {done[plan_cell.key].status} (kept from the earlier run, --resume)")
                continue
            if plan_cell.variant in unbuildable:
                done[plan_cell.key] = CellResult.not_run(*plan_cell.key, "failed", unbuildable[plan_cell.variant])
                save()
                say(f"{prefix}: failed — {unbuildable[plan_cell.variant]}")
                continue
            reason = probes.get(plan_cell.provider)
            if reason is not None:
                cell = CellResult.not_run(*plan_cell.key, "unavailable", reason)
                cell.model = infos[plan_cell.variant]
                done[plan_cell.key] = cell
                save()
                say(f"{prefix}: unavailable — {reason}")
                continue
            pending.append((index, plan_cell))
            submit_ready()
            while len(in_flight) >= runner.slots:
                collect()
        while in_flight:
            collect()
        _later_rounds(runner, bundle, plan, done, options, input_images, cell_timeout_s, save, say)
    except KeyboardInterrupt:
        interrupt.handled()
        outcome.interrupted = True
        runner.close()  # cells still queued or running (on a cluster) are cancelled, not left behind
        save()
        say(f"interrupted: {len(result.cells)} of {len(plan)} cells kept in {out / 'results.json'}")
        return outcome
    finally:
        interrupt.uninstall()
        if executor is None:
            runner.close()

    if evaluation.dataset is not None:
        _add_agreement(result, say)
    if with_service:
        result.service = _service_figures(bundle, result, input_images, say, service_options or ServiceRunSpec())
    result.write(out)
    return outcome


class _InterruptGuard:
    """Ctrl-C that stops the matrix even when its KeyboardInterrupt is lost.

    Python raises KeyboardInterrupt at the next bytecode of the main thread; when that is an at-fork hook
    (logging's lock release while a cell process starts), the exception is printed as "ignored" and the
    matrix would run on. The handler also notes the signal, and :meth:`raise_if_swallowed` (after every
    cell) raises it again unless the interrupt was already handled.
    """

    def __init__(self) -> None:
        self._pending = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self._pending = True
        raise KeyboardInterrupt

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self._previous is not None:  # installed, so in the main thread: this call is allowed too
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def handled(self) -> None:
        self._pending = False

    def raise_if_swallowed(self) -> None:
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt


def _later_rounds(
    runner: Executor,
    bundle: Bundle,
    plan: Sequence[CellPlan],
    done: dict[tuple[str, str, int], CellResult],
    options: RunOptions,
    images: list[str],
    cell_timeout_s: float,
    save: Callable[[], None],
    say: LogFn,
) -> None:
    """Rounds 2… of ``--rounds``: every ok cell again in a fresh process, in plan order, its replicates appended.

    Why: on a shared machine a slow spell (a neighbour, steal, a throttled core) lasts seconds and moved a whole
    cell ×2 between two A/A matrices when all its replicates ran back to back in one process. Spread over
    rounds, the spell touches one replicate of several cells, and the spread between replicates (which the
    intervals resample) shows it. A cell kept by ``--resume`` with fewer processes than rounds is completed.
    """
    shares = options.round_shares()
    for number, share in enumerate(shares[1:], start=2):
        due = [c for c in plan if _due(done.get(c.key), number)]
        for index, plan_cell in enumerate(due, start=1):
            cell = done[plan_cell.key]
            started = time.monotonic()
            more = _measure_again(runner, bundle, cell, share, options, images, cell_timeout_s)
            label = f"round {number}/{len(shares)} [{index}/{len(due)}] {plan_cell.label}"
            if more.status != "ok":
                say(f"{label}: {more.status} — {more.reason} (the cell keeps its earlier rounds)")
                continue
            append_replicates(cell, more)
            save()
            say(f"{label}: {_cell_line(cell)} ({time.monotonic() - started:.1f} s)")


def _due(cell: CellResult | None, round_number: int) -> bool:
    """Whether ``cell`` still lacks round ``round_number`` (ok cells only; one process per round)."""
    if cell is None or cell.status != "ok" or not cell.sample_replicates:
        return False
    if (cell.replicates or {}).get("stopped_because"):  # --target-precision: its process added replicates till precise
        return False
    return int((cell.replicates or {}).get("processes") or 1) < round_number


def _fit_threads(
    options: RunOptions, providers: Sequence[str], resumed: Path | None, say: LogFn
) -> tuple[RunOptions, str | None]:
    """The matrix's threads without ``--threads``: the earlier run's when resuming one that fitted them (its
    cells must stay comparable), else fitted to the others' load now (bench.runner.fit_threads)."""
    cpu = next((p for p in providers if not is_gpu(p)), None)
    if options.session.threads is not None or cpu is None:
        return options, None
    if resumed is not None and (resumed / "results.json").is_file():
        old = RunResult.load(resumed).config
        if old.get("threads_why") and isinstance(old.get("threads"), int):
            kept = replace(options, session=replace(options.session, threads=old["threads"]))
            return kept, old["threads_why"]
    return fit_threads(cpu, options, say, command="matrix", measured="every cell")


def _variant_files(
    bundle: Bundle, variants: Sequence[str], allow_build: bool, say: LogFn
) -> tuple[dict[str, Path], dict[str, str]]:
    """Each variant's file, building missing ones; a recipe that fails to build this model becomes a reason.

    An unknown variant name, or a missing one under ``--no-build``, stays an input error (exit 2).
    """
    paths: dict[str, Path] = {}
    unbuildable: dict[str, str] = {}
    buildable = set(recipe_names(bundle)) if allow_build else set()
    for variant in variants:
        try:
            paths[variant] = ensure_variant(bundle, variant, allow_build=allow_build, log=say)
        except InputError as exc:
            if variant in bundle.variants or variant not in buildable:
                raise
            unbuildable[variant] = f"{variant} could not be built for this model: {exc}"
            say(f"warning: {unbuildable[variant]}; its cells are recorded as failed")
    if not paths:
        raise InputError("no requested variant could be built: " + "; ".join(unbuildable.values()))
    return paths, unbuildable


# --- the child process ------------------------------------------------------------------------------


def _cell_spec(
    plan: CellPlan,
    bundle: Bundle,
    model_path: Path,
    options: RunOptions,
    input_images: list[str],
    evaluation: EvalSpec | None,
    model: ModelInfo | None = None,
) -> dict[str, Any]:
    evaluate = evaluation.to_dict() if evaluation is not None else None
    return cell_spec(plan.variant, plan.provider, bundle.root, model_path, options, input_images, evaluate, model)


def _tag(plan: CellPlan) -> str:
    return f"{plan.variant}-{plan.provider}-{plan.batch_size}"


def _probe_providers(executor: Executor, providers: set[str], say: LogFn) -> dict[str, str | None]:
    """Reason per GPU provider that cannot run at all where the executor runs cells (probed once, in a
    child), None when usable."""
    reasons: dict[str, str | None] = {}
    for provider in sorted(p for p in providers if is_gpu(p)):
        data, why = executor.probe(provider, PROBE_TIMEOUT_S)
        if data is None:  # the probe itself died: let each cell find out (and be recorded) on its own
            say(f"probe of {provider} {why}; its cells run anyway")
            reasons[provider] = None
        else:
            reasons[provider] = None if data.get("usable") else str(data.get("reason"))
    return reasons


# --- parent-side helpers ----------------------------------------------------------------------------


def _prepare_dataset(
    bundle: Bundle, evaluation: EvalSpec, model_path: Path
) -> tuple[DatasetInfo | None, list[str], str | None]:
    """(dataset object, input images for the timed loop, why accuracy is not evaluated or None)."""
    if evaluation.dataset is None:
        return None, [], "no labelled dataset given"
    labelled = datasets.load_labelled_set(evaluation.dataset, strict=evaluation.strict)
    labels = bundle.labels() or bundle.labels(output_width(model_path))
    positive, why = positive_index(labels, evaluation.positive_label)
    if positive is None and evaluation.positive_label not in (None, ""):
        raise InputError(why or f"--positive-label {evaluation.positive_label!r} matches no label")
    if positive is not None:
        labelled.indexed(labels, positive)  # an unmappable dataset label is an input error now, not per cell
    info = audit.with_audit(labelled, None, labels, positive)  # the set's shortcut audit rides with its fingerprint
    return info, [str(i.path) for i in labelled.items], why


def _load_previous(out: Path, result: RunResult, say: LogFn) -> dict[tuple[str, str, int], CellResult]:
    if not (out / "results.json").is_file():
        say(f"--resume: no results.json in {out} yet; starting from scratch")
        return {}
    old = RunResult.load(out)
    differ = [k for k in MEASURE_KEYS if old.config.get(k) != result.config.get(k)]
    changes = [f"{_FLAGS.get(k, k)}: {old.config.get(k)!r} then, {result.config.get(k)!r} now" for k in differ]
    if (old.dataset or {}).get("fingerprint") != (result.dataset or {}).get("fingerprint"):
        changes.append("the dataset's fingerprint differs")
    if changes:
        raise InputError(
            f"--resume: {out} was measured with other settings ({'; '.join(changes)}); its cells would not be "
            "comparable: rerun with the same flags, or give a new --out"
        )
    result.run_id, result.created = old.run_id, old.created
    return {c.key: c for c in old.cells}


def _reusable(cell: CellResult | None, info: ModelInfo) -> bool:
    """A finished cell of the earlier run measured the same model file: keep it."""
    return cell is not None and cell.status == "ok" and cell.model is not None and cell.model.sha256 == info.sha256


def _cell_line(cell: CellResult) -> str:
    if cell.status != "ok":
        return f"{cell.status} — {cell.reason}"
    lat = cell.latency_ms or {}
    acc = (cell.accuracy or {}).get("accuracy")
    text = (
        f"ok · p50 {fmt(lat.get('p50'), 3)} ms · p99 {fmt(lat.get('p99'), 3)} ms · {fmt(cell.throughput_ips, 1)} img/s"
    )
    text += f" · accuracy {acc * 100:.2f}%" if acc is not None else ""
    return text + (f" · on {_where(cell)}" if cell.placement else "")


def _where(cell: CellResult) -> str:
    placed = cell.placement or {}
    return f"{placed.get('machine_class')} (node {placed.get('node_ip')})"


def _eta(durations: list[float], remaining: int, parallel: int = 1) -> str:
    """Mean cell duration × cells left, shared over the cells that run at once."""
    if remaining <= 0:
        return "0:00:00"
    if not durations:
        return "—"
    seconds = round(sum(durations) / len(durations) * remaining / max(1, parallel))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _add_agreement(result: RunResult, say: LogFn) -> None:
    """Agreement of each variant's predictions with the reference variant's, on the same provider."""
    if not any(c.accuracy for c in result.cells):
        return
    reference = str(result.config.get("reference_variant") or REFERENCE_VARIANT)
    if not any(c.variant == reference and c.accuracy for c in result.cells):
        say(f"agreement not computed: {reference} has no evaluated cell in this run")
        return
    add_agreement(result.cells, reference)


def _service_figures(
    bundle: Bundle, result: RunResult, images: list[str], say: LogFn, options: ServiceRunSpec
) -> list[ServiceEntry]:
    """Service figures per variant, on the first provider (in the order asked) where that variant ran, loaded
    as ``options`` say; with a budget, each variant's deadline is an even share of the time left."""
    entries: list[ServiceEntry] = []
    providers = result.config["providers"]
    variants = list(result.config["variants"])
    end = None if options.budget_s is None else time.monotonic() + options.budget_s
    for index, variant in enumerate(variants):
        ran = [
            c for p in providers for c in result.cells if c.variant == variant and c.provider == p and c.status == "ok"
        ]
        if not ran:
            say(f"service: {variant} ran on no provider; not served")
            continue
        provider = ran[0].provider
        # bench's own in-process p50 at batch 1, when the matrix measured it: the overhead is against that
        batch1 = next((c for c in ran if c.provider == provider and c.batch_size == 1), None)
        inprocess = (batch1.latency_ms or {}).get("p50") if batch1 is not None else None
        now = time.monotonic()
        deadline = None if end is None else now + max(0.0, end - now) / (len(variants) - index)
        say(f"service: {variant} on {provider} …")
        entries.append(
            harness.service_figures(
                bundle.root,
                variant,
                provider,
                images=[Path(p) for p in images] or None,
                rate=options.rate,
                duration_s=options.duration_s,
                slo_p99_ms=options.slo_p99_ms,
                deadline=deadline,
                inprocess_p50_ms=inprocess,
                log=say,
                server_cpus=options.server_cpus,
                load_cpus=options.load_cpus,
            )
        )
    return entries


# --- measuring further until the recommendation is decided (bench matrix --decide) ------------------

ReplicateWants = Callable[[RunResult], dict[tuple[str, str, int], int]]
IsDecided = Callable[[RunResult], bool]
PROCESS_START_S = 3.0  # first guess at a cell process's own cost (start, imports, model load), then measured


def measure_to_decide(
    bundle: Bundle,
    result: RunResult,
    out: Path,
    options: RunOptions,
    budget_s: float,
    wants: ReplicateWants,
    decided: IsDecided,
    evaluation: EvalSpec = NO_EVALUATION,
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S,
    max_rounds: int = 4,
    log: LogFn | None = None,
) -> DecideRecord:
    """Add replicates to the cells ``wants`` names (cell key → replicates this round; empty when no replicate
    would change the recommendation: ``decided`` tells decided from cannot-be-settled) until it is decided,
    ``max_rounds`` rounds have run or ``budget_s`` is spent.

    Each round measures each cell in a fresh process as the matrix does (same settings and timed input, no
    accuracy) and appends its replicates to the cell under new ids; results.json is rewritten after each cell
    and the record of the looks goes to ``result.recommendation["decide"]`` (so ``wants`` sees how many
    rounds have run). The report's own rule says what the rounds mean; this function only measures.
    """
    say = log or (lambda _m: None)
    if budget_s <= 0:
        raise InputError(f"--decide must be > 0 seconds, got {budget_s:g}")
    recorded_threads = result.config.get("threads")
    if options.session.threads is None and isinstance(recorded_threads, int):  # the matrix fitted its threads
        options = replace(options, session=replace(options.session, threads=recorded_threads))
    record: DecideRecord = {"budget_s": budget_s, "rounds": 0, "seconds": 0.0, "added": [], "looks": []}
    added: dict[tuple[str, str, int], int] = {}
    started = time.monotonic()
    process_s = PROCESS_START_S
    images: list[str] | None = None
    runner = LocalExecutor()
    stopped = "not_needed"
    try:
        while True:
            result.recommendation = {**(result.recommendation or {}), "decide": record}
            wanted = wants(result)
            if not wanted:
                # undecided while no replicate would change it: a deciding figure is noisy
                settled = "decided" if record["rounds"] else "not_needed"
                stopped = settled if decided(result) else "cannot_settle"
                break
            if record["rounds"] >= max_rounds:
                stopped = "max_rounds"
                break
            cells = {c.key: c for c in result.cells if c.status == "ok" and c.sample_replicates}
            plan = _fit_budget(
                {k: n for k, n in wanted.items() if k in cells},
                cells,
                budget_s - (time.monotonic() - started),
                process_s,
            )
            if not plan:
                stopped = "budget" if any(k in cells for k in wanted) else "cannot_add"
                break
            if images is None:
                images = _prepare_dataset(bundle, evaluation, _model_path(bundle, next(iter(plan))[0]))[1]
            say(
                f"decide: round {record['rounds'] + 1}: "
                + ", ".join(f"+{n} replicates of {CellPlan(*k).label}" for k, n in plan.items())
            )
            round_start, look = time.monotonic(), []
            for key, count in plan.items():
                cell_start = time.monotonic()
                more = _measure_again(runner, bundle, cells[key], count, options, images, cell_timeout_s)
                took = time.monotonic() - cell_start
                if more.status != "ok":
                    say(f"decide: {CellPlan(*key).label}: {more.status} — {more.reason}")
                    continue
                process_s = max(0.5, took - sum(more.samples_ms) / 1000.0)
                append_replicates(cells[key], more)
                added[key] = added.get(key, 0) + count
                look.append(_decide_cell(key, count))
                result.write(out)
            record["rounds"] += 1
            record["looks"].append({"seconds": round(time.monotonic() - round_start, 3), "cells": look})
            record["seconds"] = round(time.monotonic() - started, 3)
            if not look:
                stopped = "cannot_add"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        runner.close()
    record["seconds"] = round(time.monotonic() - started, 3)
    record["added"] = [_decide_cell(k, n) for k, n in added.items()]
    record["stopped"] = cast(Any, stopped)
    result.recommendation = {**(result.recommendation or {}), "decide": record}
    result.write(out)
    return record


def _decide_cell(key: tuple[str, str, int], replicates: int) -> DecideCell:
    return {"variant": key[0], "provider": key[1], "batch_size": key[2], "replicates": replicates}


def _model_path(bundle: Bundle, variant: str) -> Path:
    return ensure_variant(bundle, variant, allow_build=False)


def _replicate_seconds(cell: CellResult) -> float:
    """One more replicate of ``cell``: its timed calls (plus a tenth for warm-up) and a session's creation."""
    count = max(1, len(set(cell.sample_replicates)))
    creates = list((cell.replicates or {}).get("session_create_ms") or [cell.session_create_ms or 0.0])
    return 1.1 * sum(cell.samples_ms) / 1000.0 / count + sum(creates) / len(creates) / 1000.0


def _fit_budget(
    plan: dict[tuple[str, str, int], int],
    cells: dict[tuple[str, str, int], CellResult],
    left_s: float,
    process_s: float,
) -> dict[tuple[str, str, int], int]:
    """The round's replicates cut down (largest first) until its estimated time fits ``left_s``; empty if even
    one replicate per cell does not fit."""
    plan = dict(plan)

    def cost() -> float:
        return sum(process_s + n * _replicate_seconds(cells[k]) for k, n in plan.items())

    while plan and cost() > left_s:
        key = max(plan, key=lambda k: plan[k])
        if plan[key] <= 1:
            return {}
        plan[key] -= 1
    return plan


def _measure_again(
    runner: Executor,
    bundle: Bundle,
    cell: CellResult,
    count: int,
    options: RunOptions,
    images: list[str],
    cell_timeout_s: float,
) -> CellResult:
    """``count`` more replicates of ``cell`` in a fresh process, with the matrix's settings and timed input."""
    per = int((cell.replicates or {}).get("iterations_per_replicate") or 0) or max(
        1, len(cell.samples_ms) // max(1, len(set(cell.sample_replicates)))
    )
    min_time = options.loop.min_time_s * count / options.replicates if options.loop.min_time_s else None
    again = replace(
        options,
        batch_size=cell.batch_size,
        replicates=count,
        loop=replace(options.loop, iterations=per * count, min_time_s=min_time),
    )
    plan = CellPlan(*cell.key)
    spec = _cell_spec(plan, bundle, _model_path(bundle, cell.variant), again, images, None, cell.model)
    runner.submit(CellJob(plan.key, spec, cell_timeout_s, f"decide-{_tag(plan)}"))
    return runner.wait()[0][1]


def append_replicates(cell: CellResult, more: CellResult) -> None:
    """Add ``more``'s replicates (measured in a process of its own) to ``cell`` under new replicate ids, and
    derive the cell's latency, throughput, replicate figures and noise again from all of them; memory peaks and
    accuracy stay the first process's."""
    timed = ReplicateSamples()
    next_id = 0
    for source in (cell, more):
        ids = sorted(set(source.sample_replicates))
        creates = list((source.replicates or {}).get("session_create_ms") or [])
        for i, rid in enumerate(ids):
            times = [s for s, r in zip(source.samples_ms, source.sample_replicates, strict=True) if r == rid]
            timed.add(next_id, times, creates[i] if i < len(creates) else (source.session_create_ms or 0.0))
            next_id += 1
    before = cell.replicates or {}
    per = int(before.get("iterations_per_replicate") or (more.replicates or {}).get("iterations_per_replicate") or 0)
    timed.record(cell, per, str(before.get("isolation") or "session"))
    if cell.replicates is not None:
        cell.replicates["processes"] = int(before.get("processes") or 1) + 1
    parts = [dict(n) for n in (cell.noise, more.noise) if n]
    cell.noise = cast("Noise | None", combine_noise(parts))


__all__ = [
    "DEFAULT_CELL_TIMEOUT_S",
    "DEFAULT_PROVIDERS",
    "CellPlan",
    "EvalSpec",
    "MatrixOutcome",
    "append_replicates",
    "measure_to_decide",
    "parse_batch_sizes",
    "plan_cells",
    "run_matrix",
]
