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

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from bench import datasets, environment
from bench._cell import cell_spec
from bench.bundle import Bundle, positive_index
from bench.errors import InputError
from bench.evaluate import EvalSpec, add_agreement  # EvalSpec: also imported from here (bench.cli)
from bench.executors import CellJob, Executor, LocalExecutor
from bench.formatting import fmt
from bench.modelfile import model_info, output_width
from bench.perturb import DEFAULT_SEED
from bench.providers import is_gpu
from bench.results import CellResult, DatasetInfo, Environment, ModelInfo, RunConfig, RunResult, ServiceEntry
from bench.runner import RunOptions
from bench.service import harness
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


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8"`` → ``[1, 8]``; anything but positive integers is a usage error."""
    sizes: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise InputError(f"--batch-sizes takes positive integers separated by commas, got {part!r}")
        sizes.append(int(part))
    if not sizes:
        raise InputError("--batch-sizes is empty; e.g. --batch-sizes 1,8")
    return sorted(dict.fromkeys(sizes))


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
    service_options: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> MatrixOutcome:
    """Measure every cell in its own process; write results after each; never raise for a cell's trouble.

    ``executor``: where the cells run (bench.executors); default a LocalExecutor. The caller closes its own.
    """
    say = log or (lambda _m: None)
    if cell_timeout_s <= 0:
        raise InputError(f"--cell-timeout must be > 0 seconds, got {cell_timeout_s}")
    paths, unbuildable = _variant_files(bundle, variants, allow_build, say)
    infos: dict[str, ModelInfo] = {v: model_info(p) for v, p in paths.items()}
    dataset_info, input_images, accuracy_reason = _prepare_dataset(bundle, evaluation, next(iter(paths.values())))

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
            **({"service_options": dict(service_options)} if with_service and service_options else {}),
            **{k: v for k, v in options.as_config().items() if k != "batch_size"},
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
    # Finished cells by key: kept ones from --resume first, then each cell as it ends. Always written in plan
    # order, so an interrupted run (even one interrupted before reaching a kept cell) loses nothing.
    done: dict[tuple[str, str, int], CellResult] = {
        c.key: previous[c.key] for c in plan if c.variant in infos and _reusable(previous.get(c.key), infos[c.variant])
    }
    kept = set(done)
    outcome.reused = len(kept)

    def save() -> None:
        result.cells = [done[c.key] for c in plan if c.key in done]
        result.write(out)

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
                replace(options, batch_size=plan_cell.batch_size),
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
    except KeyboardInterrupt:
        outcome.interrupted = True
        runner.close()  # cells still queued or running (on a cluster) are cancelled, not left behind
        save()
        say(f"interrupted: {len(result.cells)} of {len(plan)} cells kept in {out / 'results.json'}")
        return outcome
    finally:
        if executor is None:
            runner.close()

    if evaluation.dataset is not None:
        _add_agreement(result, say)
    if with_service:
        result.service = _service_figures(bundle, result, input_images, say, service_options or {})
    result.write(out)
    return outcome


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
    info = labelled.fingerprint()
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
    bundle: Bundle, result: RunResult, images: list[str], say: LogFn, options: dict[str, Any]
) -> list[ServiceEntry]:
    """Service figures per variant, on the first provider (in the order asked) where that variant ran;
    ``options`` go to harness.service_figures (rate, duration_s: ``--service-rate``, ``--service-duration``)."""
    entries: list[ServiceEntry] = []
    providers = result.config["providers"]
    for variant in result.config["variants"]:
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
        say(f"service: {variant} on {provider} …")
        entries.append(
            harness.service_figures(
                bundle.root,
                variant,
                provider,
                images=[Path(p) for p in images] or None,
                inprocess_p50_ms=inprocess,
                log=say,
                **options,
            )
        )
    return entries


__all__ = [
    "DEFAULT_CELL_TIMEOUT_S",
    "DEFAULT_PROVIDERS",
    "CellPlan",
    "EvalSpec",
    "MatrixOutcome",
    "parse_batch_sizes",
    "plan_cells",
    "run_matrix",
]
