"""The ``bench`` command: parse options, call the library, print. No measuring logic lives here.

What a person sees (tables, environment, progress) is drawn by :mod:`bench.console`. Heavy third-party
packages (onnxruntime, onnx, pandas, matplotlib, rich, uvicorn) are imported by the library where it
needs them; ``bench.load``, ``bench.matrix`` (asyncio, http.client, ssl) and ``bench.report`` are imported
by the commands that use them. Together that keeps ``bench --help`` near 0.2 s instead of 0.3 s.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench import __version__
from bench.ab import DEFAULT_MIN_TIME_S, ISOLATIONS, MAX_BLOCKS, MIN_BLOCKS, run_ab
from bench.bundle import Bundle, resolve_model_dir
from bench.calibrate import CALIBRATION_FILE, load_calibration, run_calibration, write_calibration
from bench.calibrate import summary_lines as calibration_lines
from bench.commands import run_cells, run_eval
from bench.compare import CompareResult, Tolerances, compare_runs, compare_schema, load_pair, parse_tolerance
from bench.console import (
    accuracy_table,
    build_table,
    cell_progress,
    cells_table,
    check_table,
    footnotes,
    log,
    print_environment,
    print_table,
    robustness_table,
    variants_table,
)
from bench.datasets import image_files, load_images, load_labelled_set, resolve_dataset
from bench.engine import SessionSpec, probe_provider
from bench.environment import fingerprint, provider_libraries
from bench.errors import BenchError, CellNotRun, InputError, VerdictFailed
from bench.evaluate import check_threshold
from bench.executors import make_executor
from bench.load import LoadSpec, run_find_max, run_generators, run_load, summary_lines
from bench.matrix import DEFAULT_PROVIDERS, EvalSpec, parse_batch_sizes, run_matrix
from bench.perturb import parse_perturbations, perturbation_names
from bench.providers import PROVIDER_NAMES, ProviderOptions, parse_providers
from bench.report import REPORT_FILES, claims_for, load_claims, load_policy, policy_for, write_report
from bench.results import RunResult, atomic_write_text, results_schema, schema_text
from bench.runner import DEFAULT_REPLICATES, RunOptions
from bench.service import ServiceConfig
from bench.service.config import BATCH_PIXEL_FACTOR, DEFAULT_MAX_PIXELS, LOOPBACK_HOSTS
from bench.service.server import serve as run_server
from bench.timing import LoopSpec
from bench.variants import (
    build_variants,
    check_variants,
    list_variants,
    load_recipes,
    parse_tolerances,
    parse_variants,
)

ISSUES_URL = "the bench issue tracker"


class BenchGroup(click.Group):
    """Turns BenchError into one line on stderr + its exit code; anything unexpected into exit 4."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            # 130 = 128 + SIGINT, the shell's convention; 1 is reserved for failed verdicts (CLI.md)
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # internal error: one line, where to report, exit 4
            where = _where(exc)
            click.echo(
                f"internal error: {type(exc).__name__}: {exc} (at {where}); please report it to {ISSUES_URL} "
                "with the command line (BENCH_DEBUG=1 shows the traceback)",
                err=True,
            )
            if _debug():
                raise
            ctx.exit(4)


def _debug() -> bool:
    return os.environ.get("BENCH_DEBUG") == "1"


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="bench")
def main() -> None:
    """Benchmark and evaluate ONNX image-classifier variants across CPU, CUDA and TensorRT.

    \b
    Quick start (bundled demo model and demo labelled set, no download):
      bench info                         environment and usable providers
      bench run                          fp32 on cpu, latency + memory
      bench run --variant fp16 --provider cuda --json
      bench eval --variant all           accuracy of every variant
      bench matrix --out reports/rc1     variants × providers × batch sizes + report

    Exit codes: 0 ok · 1 a verdict failed · 2 usage/input error · 3 the requested cell could not run ·
    4 internal error.
    """


# --- shared options -------------------------------------------------------------------------------


def model_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--model-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Model folder (onnx/model*.onnx + config.json) or a folder of .onnx files. "
        "Default: $BENCH_MODEL_DIR, ./variants/demo, then the bundled demo.",
    )(f)


def measure_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Flags shared by every command that measures latency (run, matrix, ab)."""
    opts = [
        click.option("--iterations", type=int, default=100, show_default=True, help="Timed calls per cell."),
        click.option(
            "--warmup",
            type=int,
            default=10,
            show_default=True,
            help="Untimed calls before timing (the first replicate; each later replicate, a fresh session in a "
            "warmed process, gets 2).",
        ),
        click.option(
            "--min-time",
            type=float,
            default=None,
            help="Keep timing until this many seconds passed (and at least --iterations calls).",
        ),
        click.option("--threads", type=int, default=None, help="Intra-op threads (default: ORT's, all cores)."),
        click.option("--inter-op-threads", type=int, default=None, help="Inter-op threads."),
        click.option(
            "--graph-opt",
            type=click.Choice(["disable", "basic", "extended", "all"]),
            default="all",
            show_default=True,
            help="ORT graph optimisation level.",
        ),
        click.option("--device-id", type=int, default=0, show_default=True, help="GPU index for cuda/tensorrt."),
        click.option("--trt-fp16/--no-trt-fp16", default=True, show_default=True, help="TensorRT fp16 kernels."),
        click.option(
            "--trt-int8/--no-trt-int8", default=False, show_default=True, help="TensorRT int8 kernels (QDQ models)."
        ),
        click.option(
            "--trt-cache",
            type=click.Path(path_type=Path),
            default=None,
            help="TensorRT engine + timing cache folder, keyed by model sha256, TensorRT version, GPU and "
            "options; re-used across cells and runs (engine build time is reported apart).",
        ),
        click.option(
            "--cuda-graph",
            is_flag=True,
            help="Capture the model as a CUDA graph and replay it (cuda/tensorrt; needs IOBinding and fixed shapes).",
        ),
        click.option(
            "--io-binding/--no-io-binding",
            default=None,
            help="IOBinding with device-resident input (default: on for GPU providers, off for cpu).",
        ),
        click.option(
            "--sample-hz",
            type=float,
            default=10.0,
            show_default=True,
            help="Memory/utilisation sampling rate; 0 turns sampling off.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input tensor."),
        click.option(
            "--replicates",
            type=int,
            default=DEFAULT_REPLICATES,
            show_default=True,
            help="Fresh sessions (one alive at a time) the timed calls are split over; the statistics resample them. "
            "(bench ab: its --blocks are the replicates.)",
        ),
        click.option("--no-build", is_flag=True, help="Never build a missing variant; fail instead (exit 2)."),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(opts), f)


perturb_option = click.option(
    "--perturb",
    "perturb",
    multiple=True,
    help="Also evaluate under perturbations (repeatable): standard, extended, jpeg:Q, resize:F, blur:SIGMA, "
    "noise:SIGMA, crop:F, comma lists (jpeg:90,70) or combinations (jpeg:50+resize:0.5); clean is always included.",
)


def run_options_from(kw: dict[str, Any]) -> RunOptions:
    """RunOptions from the shared measuring flags."""
    if kw["cuda_graph"] and kw["io_binding"] is False:
        raise InputError("--cuda-graph needs IOBinding (fixed device addresses); drop --no-io-binding")
    return RunOptions(
        batch_size=kw["batch_size"],
        loop=LoopSpec(iterations=kw["iterations"], warmup=kw["warmup"], min_time_s=kw["min_time"]),
        session=SessionSpec(
            threads=kw["threads"],
            inter_op_threads=kw["inter_op_threads"],
            graph_opt=kw["graph_opt"],
            provider_options=ProviderOptions(
                device_id=kw["device_id"],
                trt_fp16=kw["trt_fp16"],
                trt_cache_dir=kw["trt_cache"],
                trt_int8=kw["trt_int8"],
                cuda_graph=kw["cuda_graph"],
            ),
        ),
        io_binding=kw["io_binding"],
        sample_hz=kw["sample_hz"],
        seed=kw["seed"],
        replicates=kw["replicates"],
    )


def emit_json(document: str) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(document)


def finish_cells(
    result: RunResult, out: Path | None, as_json: bool, show: Callable[[], None], prefix_cells: bool = True
) -> None:
    """Write results (--out), print JSON or the table, and exit 3 when a requested cell did not run."""
    if out is not None:
        json_path, _ = result.write(out)
        log(f"wrote {json_path} and results.csv")
    if as_json:
        emit_json(result.to_json())
    else:
        show()
    not_run = [c for c in result.cells if c.status != "ok"]
    if not_run:
        raise CellNotRun(
            "; ".join((f"{c.variant}/{c.provider}: " if prefix_cells else "") + (c.reason or c.status) for c in not_run)
        )


# --- commands -------------------------------------------------------------------------------------


@main.command()
@click.argument("what", type=click.Choice(["results", "compare"]), default="results")
def schema(what: str) -> None:
    """Print the JSON Schema of a results file (results.json) or of `bench compare --json` output.

    The same text as docs/results.schema.json and docs/compare.schema.json. Unknown keys are allowed
    (fields are added over time; old files keep loading).
    """
    emit_json(schema_text(results_schema() if what == "results" else compare_schema()).rstrip("\n"))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the environment object as JSON.")
def info(as_json: bool) -> None:
    """Environment fingerprint and which providers are usable here, with the reason when not."""
    env = fingerprint()
    env["providers"] = {name: {**probe_provider(name), **provider_libraries(name)} for name in PROVIDER_NAMES}
    if as_json:
        emit_json(json.dumps(env, indent=2))
        return
    print_environment(env, __version__)
    for name, state in env["providers"].items():
        if not state["libraries"]:
            continue
        click.echo(f"{name} libraries ({state['extra']} installs the pip ones):")
        for lib in state["libraries"]:
            where = lib["found"] or f"missing (looked in {', '.join(lib['looked'])})"
            optional = "" if lib["required"] else " [optional]"
            click.echo(f"  {lib['name']:<22} {lib['what']}{optional}: {where}")
        if state["fix"]:
            click.echo(f"  fix: {state['fix']}")
        if state["driver_missing"]:
            click.echo("  fix: install the NVIDIA driver (libcuda.so.1 comes with it, not with pip)")


@main.command()
@model_dir_option
@click.option(
    "--variant",
    default="fp32",
    show_default=True,
    help="Variant name (fp32, fp16, int8, q4, bnb4, ...), a comma list, or all.",
)
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (or a comma list).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Images per call.")
@measure_options
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Use real images from this folder as the input batch (default: a seeded random tensor).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON on stdout, nothing else.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write results.json + results.csv here.")
def run(
    model_dir: Path | None,
    variant: str,
    provider: str,
    as_json: bool,
    out: Path | None,
    dataset: Path | None,
    no_build: bool,
    **kw: Any,
) -> None:
    """Measure one cell: a variant on a provider at one batch size (latency, throughput, memory).

    A cuda/tensorrt request on a machine that cannot run it yields status "unavailable" with the
    reason and exit code 3 — never CPU numbers under a GPU label.
    """
    options = run_options_from(kw)
    providers = parse_providers(provider)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variant, bundle)
    with cell_progress(enabled=not as_json) as progress:
        result = run_cells(
            bundle, variants, providers, options, dataset=dataset, allow_build=not no_build, log=log, progress=progress
        )
    title = f"bench run · {bundle.root}"
    # a run's reasons already start with the provider ("cuda: unavailable — …")
    finish_cells(result, out, as_json, lambda: print_table(cells_table(result.cells, title=title)), prefix_cells=False)


@main.command("eval")
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant name, a comma list, or all.")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (or a comma list).")
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set: folder-per-class (real/, fake/ or the model's label names) or a path,label "
    "CSV/JSONL manifest. Default: $BENCH_DATASET, ./datasets/demo, then the bundled demo set.",
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Any folder of images (recursive, labels ignored): predictions and agreement only.",
)
@click.option(
    "--reference",
    default=None,
    help="Variant to measure agreement against (flip rate, |Δp(fake)|, KL); evaluated too if not listed. "
    "Default: fp32 when several variants including fp32 are evaluated; 'none' turns it off.",
)
@click.option("--positive-label", default=None, help="The fake class by id2label name or index (default: by name).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Predict fake when p(fake) ≥ T.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per inference call.")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 2) on an unreadable image or a missing manifest file instead of skipping and listing it.",
)
@perturb_option
@click.option("--device-id", type=int, default=0, show_default=True, help="GPU index for cuda/tensorrt.")
@click.option("--no-build", is_flag=True, help="Never build a missing variant; fail instead (exit 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON on stdout, nothing else.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write results.json + results.csv here.")
def eval_(
    model_dir: Path | None,
    variant: str,
    provider: str,
    dataset: Path | None,
    images: Path | None,
    reference: str | None,
    positive_label: str | None,
    threshold: float,
    batch_size: int,
    strict: bool,
    perturb: tuple[str, ...],
    device_id: int,
    no_build: bool,
    as_json: bool,
    out: Path | None,
) -> None:
    """Accuracy of one or more variants on a labelled set (+ agreement with a reference variant).

    Metrics (positive class = fake): accuracy, balanced accuracy, precision, recall, F1, ROC AUC, average
    precision, EER, log loss, ECE, confusion matrix. Unreadable images are skipped and listed (--strict
    fails instead). A cell that cannot run (provider unavailable, no fake class) → exit 3.
    """
    if images is not None and dataset is not None:
        raise InputError("--dataset and --images exclude each other; pass one")
    parse_perturbations(perturb)  # a bad --perturb is a usage error before anything loads
    providers = parse_providers(provider)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variant, bundle)
    if reference is None and len(variants) > 1 and "fp32" in variants:
        reference = "fp32"
    if reference is not None and reference.strip().lower() in ("", "none"):
        reference = None
    if images is not None and reference is None:
        log("note: --images has no labels, so only predictions are reported; add --reference fp32 for agreement")
    lset = load_images(images) if images is not None else load_labelled_set(resolve_dataset(dataset), strict=strict)
    session = SessionSpec(provider_options=ProviderOptions(device_id=device_id))
    with cell_progress(enabled=not as_json) as progress:
        result = run_eval(
            bundle,
            variants,
            providers,
            lset,
            reference=reference,
            positive_label=positive_label,
            threshold=threshold,
            batch_size=batch_size,
            strict=strict,
            allow_build=not no_build,
            session=session,
            log=log,
            progress=progress,
            perturb=perturb,
        )

    def show() -> None:
        print_table(accuracy_table(result.cells, title=f"bench eval · {bundle.root} · {lset.root} ({lset.kind})"))
        if perturb:
            print_table(robustness_table(result.cells, title="robustness · Δ vs the same variant on clean images"))
        for line in footnotes(result.cells):
            click.echo(line)

    finish_cells(result, out, as_json, show)


# --- compare / ab (regression gate) --------------------------------------------------------------


def tolerance_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Verdict tolerances shared by compare and ab: 10%, 0.1 (ratios) or 0.5pt (accuracy points)."""
    opts = [
        click.option(
            "--latency-tolerance",
            default="10%",
            show_default=True,
            help="Slower than this (p50/p95 ratio) *and* the 95% interval above 1 → regression.",
        ),
        click.option(
            "--accuracy-tolerance",
            default="0.5pt",
            show_default=True,
            help="Accuracy drop in points (McNemar-tested when both sides stored predictions).",
        ),
        click.option("--memory-tolerance", default="10%", show_default=True, help="Peak RSS / GPU memory growth."),
        click.option("--size-tolerance", default=None, help="Model file growth (default: --memory-tolerance)."),
        click.option(
            "--summary",
            type=click.Path(path_type=Path),
            default=None,
            help='Also append the Markdown table to this file (e.g. "$GITHUB_STEP_SUMMARY").',
        ),
        click.option(
            "--fail-on-inconclusive",
            is_flag=True,
            help="Exit 1 when a row is inconclusive (the noise hid the answer); default: exit 0 and say so.",
        ),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(opts), f)


def _tolerances(kw: dict[str, Any]) -> Tolerances:
    return Tolerances.parse(
        latency=kw["latency_tolerance"],
        accuracy=kw["accuracy_tolerance"],
        memory=kw["memory_tolerance"],
        size=kw["size_tolerance"],
    )


def _emit_compare(result: CompareResult, as_json: bool, summary: Path | None, title: str) -> None:
    log(f"{title}: {result.summary_line()}")
    markdown = result.to_markdown(title)
    if summary is not None:
        with summary.open("a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(markdown)


@main.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@tolerance_options
@click.option(
    "--cross-machine",
    is_flag=True,
    help="Compare runs from different machines anyway (a warning in the table) instead of exit 2.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="bench calibrate's calibration.json (default: the one beside BASELINE, if any): widens the "
    "cross-run interval by the run-to-run spread measured on this machine.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the CompareResult as JSON on stdout, nothing else.")
def compare(
    baseline: Path, current: Path, cross_machine: bool, calibration: Path | None, as_json: bool, **kw: Any
) -> None:
    """Verdicts between two results files (or folders holding results.json): BASELINE vs CURRENT.

    Cells are matched by variant, provider, batch size and model sha256. Latency: regression when the
    p50 (or p95) ratio exceeds 1 + tolerance and its 95% two-level bootstrap interval (replicates, then
    calls) lies wholly above 1; same when the interval lies inside the tolerance band; inconclusive
    otherwise (each row gives its minimum detectable effect). Separate runs also differ by what the
    machine did in between: for a release gate prefer `bench ab` (both sides in one job).
    Exit 0 pass (also with inconclusive rows, unless --fail-on-inconclusive) · 1 regression · 2 bad input
    or incomparable (different machines, nothing in common).
    """
    tolerances = _tolerances(kw)
    base, cur = load_pair(baseline, current)
    beside = (baseline if baseline.is_dir() else baseline.parent) / CALIBRATION_FILE
    if calibration is None and beside.is_file():
        calibration = beside
    result = compare_runs(
        base,
        cur,
        tolerances,
        cross_machine=cross_machine,
        labels=(baseline, current),
        calibration=load_calibration(calibration) if calibration is not None else None,
    )
    _emit_compare(result, as_json, kw["summary"], "bench compare")
    result.raise_for_verdict(fail_on_inconclusive=kw["fail_on_inconclusive"])


@main.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant measured in --model-dir (the new side).")
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    default=None,
    help="The baseline model folder (the old model); same variant unless --against-variant.",
)
@click.option("--against-variant", default=None, help="The baseline variant (in --against, else in --model-dir).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (one).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Images per call.")
@measure_options
@click.option(
    "--blocks",
    type=int,
    default=None,
    help=f"Replicates per side, interleaved in a randomised balanced order (AB/BA); the timed calls per side are "
    f"spread over them. Default: as many as the timed work pays for ({MIN_BLOCKS}–{MAX_BLOCKS}), from the cost of "
    "a probe session.",
)
@click.option(
    "--isolation",
    type=click.Choice(ISOLATIONS),
    default="session",
    show_default=True,
    help="What each block gets fresh: a session (one alive at a time) or a whole process (slower; also "
    "catches process-level state).",
)
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set: real images as input, and an accuracy verdict on it for both sides.",
)
@click.option("--positive-label", default=None, help="The fake class by id2label name or index (with --dataset).")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Predict fake when p(fake) ≥ T.")
@click.option(
    "--perturb",
    "perturb",
    multiple=True,
    help="With --dataset: also compare accuracy under perturbations (repeatable; as in bench eval).",
)
@click.option(
    "--memory/--no-memory",
    "isolated_memory",
    default=True,
    show_default=True,
    help="Measure each side's memory in a short run in its own process.",
)
@tolerance_options
@click.option("--json", "as_json", is_flag=True, help="Print the CompareResult as JSON on stdout, nothing else.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write baseline/ and current/ results.json + compare.json + compare.md here.",
)
def ab(
    model_dir: Path | None,
    variant: str,
    against: Path | None,
    against_variant: str | None,
    provider: str,
    blocks: int | None,
    isolation: str,
    dataset: Path | None,
    positive_label: str | None,
    threshold: float,
    isolated_memory: bool,
    perturb: tuple[str, ...],
    as_json: bool,
    out: Path | None,
    no_build: bool,
    **kw: Any,
) -> None:
    """Measure two model folders (or two variants) alternately in one job, then compare.

    The noise-robust release gate: both sides share the machine's state and its neighbours' load, block
    by block; each block is a fresh session (or process) and the verdict resamples blocks, then calls.
    Without --threads on a CPU whose other processes hold cores ORT's threads would need, both sides run
    with fewer threads (said, and recorded as config.threads_why); --threads 0 keeps ORT's default.
    Exit 0 pass (also with inconclusive rows, unless --fail-on-inconclusive) · 1 regression (the
    --model-dir side is worse) · 2 bad input.
    """
    tolerances = _tolerances(kw)
    if kw["min_time"] is None:  # a side is timed for at least this long: 100 calls of a µs model are 1 ms
        kw["min_time"] = DEFAULT_MIN_TIME_S
    result, base_run, cur_run = run_ab(
        model_dir,
        variant,
        against,
        against_variant,
        provider,
        run_options_from(kw),
        tolerances,
        blocks=blocks,
        dataset=dataset,
        positive_label=positive_label,
        threshold=threshold,
        allow_build=not no_build,
        isolated_memory=isolated_memory,
        log=log,
        isolation=isolation,
        perturb=perturb,
    )
    if out is not None:
        base_run.write(out / "baseline")
        cur_run.write(out / "current")
        atomic_write_text(out / "compare.json", result.to_json() + "\n")
        atomic_write_text(out / "compare.md", result.to_markdown("bench ab"))
        log(f"wrote {out}/compare.json, compare.md, baseline/ and current/")
    _emit_compare(result, as_json, kw["summary"], "bench ab")
    result.raise_for_verdict(fail_on_inconclusive=kw["fail_on_inconclusive"])


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8007",
    show_default=True,
    help="Base URL of a running service (loopback only unless --allow-remote).",
)
@click.option(
    "--endpoint",
    type=click.Choice(["detect", "batch", "health"]),
    default="detect",
    show_default=True,
    help="POST /detect, POST /detect/batch or GET /health/live.",
)
@click.option(
    "--rate", type=float, default=None, help="Open loop: requests/s (default 10; with --find-max the starting rate)."
)
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson"]),
    default="constant",
    show_default=True,
    help="Open-loop arrivals: evenly spaced or a seeded Poisson process.",
)
@click.option(
    "--duration", type=float, default=None, help="Seconds of load (default 10; with --find-max, per step, default 5)."
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Closed loop instead: keep N requests in flight (labelled mode: closed).",
)
@click.option("--max-requests", type=int, default=None, help="Request cap (default 100000).")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of images to send, cycled (default: the demo set).",
)
@click.option("--batch-files", type=int, default=4, show_default=True, help="Files per /detect/batch request.")
@click.option("--find-max", is_flag=True, help="Step the rate up; report the highest meeting --p99-slo, no errors.")
@click.option("--p99-slo", type=float, default=50.0, show_default=True, help="p99 latency SLO (ms) for --find-max.")
@click.option(
    "--max-steps", type=int, default=10, show_default=True, help="Most rate probes of --find-max (retests count)."
)
@click.option(
    "--step-requests",
    type=int,
    default=300,
    show_default=True,
    help="--find-max: each step runs until this many requests were sent (and --duration): a steady state.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Per-request timeout (s).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of Poisson arrivals.")
@click.option("--connections", type=int, default=256, show_default=True, help="Open loop: connection pool size.")
@click.option("--no-ceiling", is_flag=True, help="Skip measuring the generator's own ceiling first.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --url.")
@click.option(
    "--generators",
    type=int,
    default=1,
    show_default=True,
    help="Split the load over N independent generators (processes or Ray actors); one merged result.",
)
@click.option(
    "--executor",
    "generator_executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where --generators run: processes here, or Ray actors spread over a cluster's nodes.",
)
@click.option("--ray-address", default=None, help="Ray cluster for --executor ray (default: $RAY_ADDRESS, else local).")
@click.option("--json", "as_json", is_flag=True, help="Print the LoadResult as JSON on stdout, nothing else.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write load.json here.")
def load(
    url: str,
    endpoint: str,
    rate: float | None,
    arrival: str,
    duration: float | None,
    concurrency: int | None,
    max_requests: int | None,
    images: Path | None,
    batch_files: int,
    find_max: bool,
    p99_slo: float,
    max_steps: int,
    step_requests: int,
    timeout: float,
    seed: int,
    connections: int,
    no_ceiling: bool,
    allow_remote: bool,
    generators: int,
    generator_executor: str,
    ray_address: str | None,
    as_json: bool,
    out: Path | None,
) -> None:
    """Load test a running detect service: open loop at a fixed rate (default) or closed loop.

    Open-loop latency counts from each request's scheduled send time, so a stalled server shows in the
    tail. Errors are counted by status or exception, not raised (exit 0); a bad flag or a remote
    --url without --allow-remote exits 2.
    """
    # lazy: bench.load brings asyncio, http.client and ssl, which would slow every `bench --help` (~0.05 s)

    paths: tuple[Path, ...] = ()
    if endpoint != "health":
        paths = tuple(image_files(resolve_dataset(images)))
    spec = LoadSpec(
        url=url,
        endpoint=endpoint,
        rate=rate if rate is not None or concurrency else 10.0,
        arrival=arrival,
        duration_s=duration or (5.0 if find_max else 10.0),
        concurrency=concurrency,
        max_requests=max_requests,
        images=paths,
        files_per_request=batch_files,
        timeout_s=timeout,
        seed=seed,
        connections=connections,
        allow_remote=allow_remote,
        measure_ceiling=not no_ceiling,
    )
    if ray_address and generator_executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    if find_max and (generators != 1 or generator_executor != "local"):
        raise InputError("--find-max steps one local generator; drop --generators/--executor ray")
    if generators != 1 or generator_executor == "ray":
        result = run_generators(spec, generators, generator_executor, ray_address, log=log)
    elif find_max:
        result = run_find_max(
            spec,
            p99_slo,
            step_duration_s=spec.duration_s,
            max_steps=max_steps,
            log=log,
            min_step_requests=step_requests,
        )
    else:
        result = run_load(spec, log=log)
    if out is not None:
        atomic_write_text(out / "load.json", result.to_json() + "\n")
        log(f"wrote {out / 'load.json'}")
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo("\n".join(summary_lines(result)))


# --- variants (list / build / check) -------------------------------------------------------------


def recipes_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--recipes",
        type=click.Path(path_type=Path),
        default=None,
        help="Recipes file (default: ./variants/recipes.toml, then the bundled one; a model folder's "
        "own recipes.toml overrides single recipes).",
    )(f)


def _split_names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@main.group()
def variants() -> None:
    """List, build and verify a model's variants (fp32, fp16, int8, uint8, q4, q4f16, bnb4).

    \b
      bench variants list  --model-dir DIR          what is on disk: size, precision, quant ops, params, sha256
      bench variants build --model-dir DIR          derive the missing variants from onnx/model.onnx
      bench variants check --model-dir DIR          each variant vs fp32 on a seeded probe batch (exit 1 if off)
    """


@variants.command("list")
@model_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the variants as JSON on stdout, nothing else.")
def variants_list(model_dir: Path | None, as_json: bool) -> None:
    """Every variant file in the model folder (nothing is built): name, file, size, precision, op types,
    parameter count, sha256 and, when built by bench, its recipe."""
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    infos = list_variants(bundle)
    if as_json:
        emit_json(json.dumps({"model_dir": str(bundle.root), "variants": [i.as_dict() for i in infos]}, indent=2))
        return
    print_table(variants_table(infos, title=f"bench variants · {bundle.root}"))


@variants.command("build")
@model_dir_option
@click.option("--only", default=None, help="Comma list of recipes to build (default: every recipe).")
@click.option("--force", is_flag=True, help="Rebuild variants that are already on disk.")
@recipes_option
def variants_build(model_dir: Path | None, only: str | None, force: bool, recipes: Path | None) -> None:
    """Derive missing variants from onnx/model.onnx by the recipes (written atomically, with a
    model_<name>.json sidecar recording parameters and tool versions). A recipe with nothing to
    quantise (no MatMul) is skipped with a warning."""
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    book = load_recipes(bundle, recipes)
    results = build_variants(bundle, only=_split_names(only), force=force, recipes=book, log=log)
    print_table(build_table(results, title=f"bench variants build · {bundle.root}"))


@variants.command("check")
@model_dir_option
@click.option(
    "--only",
    default=None,
    help="Comma list of variants to check (default: every variant on disk; "
    "a missing one a recipe can build is built first).",
)
@click.option(
    "--tolerance",
    "tolerance",
    multiple=True,
    help="Max |Δprob| vs fp32: a number for every variant or VARIANT=NUMBER (comma list, repeatable); "
    "overrides the recipe's max_abs_dprob.",
)
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option("--probe-size", type=int, default=16, show_default=True, help="Images in the seeded probe batch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the probe batch.")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Probe with the first --probe-size images of this folder (recursive) instead of a random tensor.",
)
@click.option("--no-build", is_flag=True, help="Never build a missing variant named in --only; fail instead (exit 2).")
@recipes_option
@click.option("--json", "as_json", is_flag=True, help="Print the check report as JSON on stdout, nothing else.")
def variants_check(
    model_dir: Path | None,
    only: str | None,
    tolerance: tuple[str, ...],
    provider: str,
    probe_size: int,
    seed: int,
    images: Path | None,
    no_build: bool,
    recipes: Path | None,
    as_json: bool,
) -> None:
    """Each variant vs fp32 on a seeded probe batch: max |Δlogit|, max |Δprob|, argmax agreement.

    Exit 1 when a variant exceeds its tolerance (per recipe in recipes.toml, or --tolerance).
    A variant this provider cannot run is listed as unavailable and does not fail the check.
    """
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    book = load_recipes(bundle, recipes)
    report = check_variants(
        bundle,
        _split_names(only),
        provider=provider,
        probe_size=probe_size,
        seed=seed,
        tolerances=parse_tolerances(tolerance),
        recipes=book,
        allow_build=not no_build,
        log=log,
        images=images,
    )
    if as_json:
        emit_json(json.dumps(report.as_dict(), indent=2))
    else:
        print_table(
            check_table(
                report,
                title=f"bench variants check · {bundle.root} · vs {report.reference} on "
                f"{provider} · probe {report.probe['n']} "
                f"({'images' if images else f'seed {seed}'})",
            )
        )
        log(f"verdict: {report.verdict}")
    report.raise_on_failure()


@main.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant to calibrate (one).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (one).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Images per call.")
@measure_options
@click.option("--runs", type=int, default=10, show_default=True, help="A/A gates (and separate runs) to make.")
@click.option("--blocks", type=int, default=None, help="Replicates per side per gate (default: as bench ab chooses).")
@click.option("--target-mde", default="5%", show_default=True, help="The smallest slowdown the gate should catch.")
@click.option("--latency-tolerance", default="10%", show_default=True, help="The gate's tolerance (as in compare).")
@click.option(
    "--cross-run/--no-cross-run",
    default=True,
    show_default=True,
    help="Also make separate runs in fresh processes and compare them (the cross-run false-alarm rate).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON on stdout, nothing else.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write calibration.json here (e.g. beside a baseline's results.json: compare then uses it).",
)
def calibrate(
    model_dir: Path | None,
    variant: str,
    provider: str,
    runs: int,
    blocks: int | None,
    target_mde: str,
    latency_tolerance: str,
    cross_run: bool,
    as_json: bool,
    out: Path | None,
    no_build: bool,
    **kw: Any,
) -> None:
    """A/A gates of one model on this machine: false-alarm rate, MDE, replicates needed for a target MDE.

    Runs --runs `bench ab` gates of the model against itself (both sides interleaved), and --runs + 1
    separate runs compared in sequence. Store the result beside a baseline (--out DIR): `bench compare`
    then widens cross-run intervals by the run-to-run spread measured here. Exit 3 when the provider
    cannot run here.
    """
    providers = parse_providers(provider)
    if len(providers) != 1 or "," in variant or variant == "all":
        raise InputError("bench calibrate measures one variant on one provider; pass single names")
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    if kw["min_time"] is None:  # as bench ab: each side is timed for at least this long
        kw["min_time"] = DEFAULT_MIN_TIME_S
    calibration = run_calibration(
        bundle,
        variant,
        providers[0],
        run_options_from(kw),
        runs=runs,
        blocks=blocks,
        target_mde=parse_tolerance(target_mde),
        tolerances=Tolerances.parse(latency=latency_tolerance),
        cross_run=cross_run,
        allow_build=not no_build,
        log=log,
    )
    if out is not None:
        log(f"wrote {write_calibration(calibration, out)}")
    if as_json:
        emit_json(json.dumps(calibration, indent=2))
    else:
        for line in calibration_lines(calibration):
            click.echo(line)


@main.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant to serve (built first when a recipe can).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=int, default=8007, show_default=True, help="Port (0 picks a free one; the ready line says which)."
)
@click.option(
    "--threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="Fake ⇔ p(fake) ≥ threshold (the evaluator's rule; 0.5 = argmax for two classes).",
)
@click.option("--positive-label", default=None, help="Name or index of the fake class (default: by name, CLI.md).")
@click.option(
    "--max-batch",
    type=int,
    default=16,
    show_default=True,
    help="Most images per inference call; 1 turns dynamic batching off.",
)
@click.option(
    "--max-delay-ms",
    type=float,
    default=2.0,
    show_default=True,
    help="Longest a request waits for others to join its batch.",
)
@click.option(
    "--max-queue", type=int, default=256, show_default=True, help="Images waiting at most; beyond it 503 + Retry-After."
)
@click.option("--max-upload-mb", type=float, default=10.0, show_default=True, help="Largest file accepted (413 above).")
@click.option(
    "--max-batch-files", type=int, default=32, show_default=True, help="Most files per /detect/batch request."
)
@click.option(
    "--max-batch-upload-mb", type=float, default=64.0, show_default=True, help="Largest /detect/batch request body."
)
@click.option(
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Most pixels one image may decode to (a JPEG at its reduced decode scale); 413 above.",
)
@click.option(
    "--max-batch-pixels",
    type=int,
    default=None,
    help=f"Most pixels one /detect/batch may decode in all; 413 above. [default: {BATCH_PIXEL_FACTOR} x --max-pixels]",
)
@click.option(
    "--allowed-hosts",
    default=",".join(LOOPBACK_HOSTS),
    show_default=True,
    callback=lambda _ctx, _param, value: tuple(h.strip() for h in value.split(",") if h.strip()),
    help="Comma list of Host header values answered (*.example.com patterns, * for any); others get 400. "
    "The --host address is added.",
)
@click.option("--expose-paths", is_flag=True, help="Show absolute model paths and the PID in /health and errors.")
@click.option("--docs", is_flag=True, help="Serve /docs and /redoc (off by default: their pages load a CDN's scripts).")
@click.option(
    "--header-timeout",
    "header_timeout_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a connection has to send a complete request head, then it is closed.",
)
@click.option(
    "--keep-alive",
    "keep_alive_s",
    type=int,
    default=5,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--limit-concurrency",
    type=int,
    default=1024,
    show_default=True,
    help="Most requests in flight; beyond it 503 (idle connections do not count, the longest-idle are closed).",
)
@click.option("--threads", type=int, default=None, help="ORT intra-op threads (default: ORT's, all cores).")
@click.option("--device-id", type=int, default=0, show_default=True, help="GPU index for cuda/tensorrt.")
@click.option(
    "--graceful-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish on SIGTERM/Ctrl-C.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
    help="uvicorn log level (stderr).",
)
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn access log).")
@click.option("--no-build", is_flag=True, help="Never build a missing variant; the model fails to load instead.")
@click.option(
    "--fallback",
    default=None,
    help="Serve this PyTorch variant (pytorch, pytorch-fp16) when --variant cannot load; /health says which and why.",
)
def serve(
    model_dir: Path | None,
    host: str,
    port: int,
    graceful_timeout: float,
    log_level: str,
    access_log: bool,
    no_build: bool,
    **kw: Any,
) -> None:
    """Reference detect service: /health, /health/live, /health/ready, /detect, /detect/batch, /metrics.

    \b
    The port answers at once; the model loads in the background (/health/ready: 503 until the
    session exists and a warm-up inference succeeded). One line on stderr says when it is ready:
      bench serve: ready on http://127.0.0.1:8007 · ...
    A model that fails to load keeps the server up: /detect answers 503 with the reason.
    """
    config = ServiceConfig(model_dir=model_dir, allow_build=not no_build, **kw)
    run_server(
        config, host=host, port=port, log_level=log_level, access_log=access_log, graceful_timeout_s=graceful_timeout
    )


# --- matrix / report (release reports) --------------------------------------------------------------


@main.command()
@model_dir_option
@click.option(
    "--variants",
    "variants_text",
    default="all",
    show_default=True,
    help="Variants: a comma list or all (fp32 + every recipe + any file on disk); missing ones are built.",
)
@click.option(
    "--providers",
    "providers_text",
    default=None,
    help="Comma list of cpu, cuda, tensorrt. Default: cpu,cuda,tensorrt (those that cannot run here "
    "become 'unavailable' rows, with the reason).",
)
@click.option("--batch-sizes", "batch_sizes_text", default="1,8", show_default=True, help="Comma list of batch sizes.")
@measure_options
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set for accuracy (evaluated once per variant × provider) and the timed input images. "
    "Default: $BENCH_DATASET, ./datasets/demo, then the bundled demo set.",
)
@click.option("--no-accuracy", is_flag=True, help="Skip accuracy evaluation (latency on a seeded random tensor).")
@perturb_option
@click.option("--threshold", type=float, default=None, help="Predict fake when p(fake) ≥ T (default: argmax).")
@click.option("--positive-label", default=None, help="The fake class by id2label name or index (default: by name).")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Release policy TOML (default: the built-in one with the seed report's targets).",
)
@click.option(
    "--cell-timeout",
    type=float,
    default=900.0,
    show_default=True,
    help="Seconds a cell's process may take (session, timed loop, accuracy) before it is killed → failed.",
)
@click.option("--resume", is_flag=True, help="Keep the finished cells of an earlier run in --out (same model sha256).")
@click.option(
    "--with-service",
    is_flag=True,
    help="Also serve each variant (first provider where it ran) and load it: service figures in the report.",
)
@click.option(
    "--service-rate",
    type=float,
    default=20.0,
    show_default=True,
    help="With --with-service: /detect load rate (requests/s, open loop).",
)
@click.option(
    "--service-duration",
    type=float,
    default=5.0,
    show_default=True,
    help="With --with-service: seconds of /detect and /detect/batch load (a longer run shows slower leaks).",
)
@click.option(
    "--claims",
    "claims_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Claims TOML answered in the report's Claims table (default: the hand-written seed report's claims).",
)
@click.option("--html", "with_html", is_flag=True, help="Also write report.html / report.th.html (plots inlined).")
@click.option(
    "--executor",
    "executor_name",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where cells run: one by one here, or as Ray tasks on a cluster (a whole GPU per GPU cell).",
)
@click.option(
    "--ray-address",
    default=None,
    help="Ray cluster to join (ray://HEAD:10001, HEAD:6379, auto). Default: $RAY_ADDRESS, else a local Ray.",
)
@click.option(
    "--ray-resources",
    default=None,
    help="Custom Ray resources every cell asks for, as JSON: '{\"accelerator_type:H100\": 0.001}' pins a GPU type.",
)
@click.option(
    "--ray-schedule-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds a cell no node can run waits for one to join before it is recorded unavailable.",
)
@click.option("--strict", is_flag=True, help="Exit 3 when any cell did not run (unavailable or failed).")
@click.option("--fail-on-policy", is_flag=True, help="Exit 1 when no release candidate passes every policy check.")
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON on stdout, nothing else.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder (results.json/csv, report.md, report.th.md, plots/). Default: reports/<run_id>.",
)
@click.pass_context
def matrix(
    ctx: click.Context,
    model_dir: Path | None,
    variants_text: str,
    providers_text: str | None,
    batch_sizes_text: str,
    dataset: Path | None,
    no_accuracy: bool,
    perturb: tuple[str, ...],
    threshold: float | None,
    positive_label: str | None,
    policy_path: Path | None,
    cell_timeout: float,
    resume: bool,
    with_service: bool,
    executor_name: str,
    ray_address: str | None,
    ray_resources: str | None,
    ray_schedule_timeout: float,
    service_rate: float,
    service_duration: float,
    claims_path: Path | None,
    with_html: bool,
    strict: bool,
    fail_on_policy: bool,
    as_json: bool,
    out: Path | None,
    no_build: bool,
    **kw: Any,
) -> None:
    """Variants × providers × batch sizes, each cell in its own process; results, report and plots.

    \b
    A crash, OOM or hang of one cell marks it failed and the matrix goes on; Ctrl-C keeps the finished
    cells (exit 130; --resume --out DIR continues). Writes results.json/csv after every cell, then
    report.md (English), report.th.md (Thai) and plots/*.png; `bench report DIR` re-renders them.
    Exit: 0 (unavailable cells included) · 1 --fail-on-policy and no candidate passes · 3 --strict and a
    cell did not run.
    """
    # lazy: bench.matrix brings bench.load through bench.service.harness (asyncio, http.client, ssl; ~0.05 s)

    options = run_options_from({**kw, "batch_size": 1})
    providers = parse_providers(providers_text or DEFAULT_PROVIDERS)
    batch_sizes = parse_batch_sizes(batch_sizes_text)
    policy = load_policy(policy_path)
    claims = load_claims(claims_path)
    if service_rate <= 0 or service_duration <= 0:
        raise InputError(
            f"--service-rate and --service-duration must be > 0, got {service_rate:g} req/s for {service_duration:g} s"
        )
    if threshold is not None:
        check_threshold(threshold)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variants_text, bundle)
    if perturb and no_accuracy:
        raise InputError("--perturb needs accuracy evaluation; drop --no-accuracy")
    evaluation = EvalSpec(
        dataset=None if no_accuracy else resolve_dataset(dataset),
        threshold=threshold,
        positive_label=positive_label,
        perturbations=tuple(perturbation_names(perturb)) if perturb else (),
    )
    executor = make_executor(executor_name, ray_address, ray_resources, ray_schedule_timeout, log=log)
    try:
        outcome = run_matrix(
            bundle,
            variants,
            providers,
            batch_sizes,
            options,
            out=out,
            evaluation=evaluation,
            policy=policy.to_dict(),
            policy_file=str(policy_path) if policy_path else None,
            cell_timeout_s=cell_timeout,
            resume=resume,
            allow_build=not no_build,
            with_service=with_service,
            log=log,
            executor=executor,
            service_options={"rate": service_rate, "duration_s": service_duration},
        )
    finally:
        executor.close()
    result, out_dir = outcome.result, outcome.out
    result.config["claims"] = claims.to_config()  # type: ignore[typeddict-unknown-key]
    if outcome.interrupted:
        log(
            f"stopped by Ctrl-C: continue with `bench matrix ... --resume --out {out_dir}`, "
            f"or render what finished with `bench report {out_dir}`"
        )
        ctx.exit(130)
    report = write_report(result, out_dir, langs=("en", "th"), policy=policy, claims=claims, html=with_html)
    result.recommendation = report.detail  # type: ignore[assignment]
    result.write(out_dir)
    if as_json:
        emit_json(result.to_json())
    else:
        print_table(cells_table(result.cells, title=f"bench matrix · {bundle.root}"))
    log(
        f"wrote {out_dir / 'results.json'}, results.csv, report.md, report.th.md"
        f"{', report.html, report.th.html' if with_html else ''} and plots/ "
        f"({outcome.ran} cells measured, {outcome.reused} kept from the earlier run)"
    )
    verdict = "pass" if report.verdict.passed else "fail"
    log(
        f"release checks: {verdict} ({len(report.verdict.passing)} of {len(report.verdict.candidates)} candidate "
        f"cells pass every check) · recommendation: {report.recommendation or 'none'}"
    )
    tied = (report.detail or {}).get("tied") or []
    if tied:
        names = ", ".join(f"{t['variant']}/{t['provider']}/b{t['batch_size']}" for t in tied)
        log(
            f"recommendation tied on {report.detail['rank_by']} (95% intervals overlap): {names}; "  # type: ignore[index]
            f"chosen by: {report.detail['rule']}"
        )  # type: ignore[index]
    not_run = [c for c in result.cells if c.status != "ok"]
    if strict and not_run:
        raise CellNotRun(
            f"{len(not_run)} of {len(result.cells)} cells did not run (--strict): "
            + "; ".join(f"{c.variant}/{c.provider}/b{c.batch_size}: {c.status}" for c in not_run)
        )
    if fail_on_policy and not report.verdict.passed:
        raise VerdictFailed(
            f"release checks failed: none of the {len(report.verdict.candidates)} candidate cells "
            f"passes every check of the policy (see section 5 of {out_dir / 'report.md'})"
        )


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--lang",
    type=click.Choice(["en", "th"]),
    default="en",
    show_default=True,
    help="en writes report.md, th writes report.th.md (plots are shared, text in English).",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Judge with this policy TOML instead of the one recorded in results.json.",
)
@click.option(
    "--claims",
    "claims_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Answer the claims of this TOML instead of the ones recorded in results.json (default: the seed's).",
)
@click.option("--no-plots", is_flag=True, help="Render the Markdown only; keep the existing plots/.")
@click.option("--html", "with_html", is_flag=True, help="Also write report.html / report.th.html (plots inlined).")
@click.option("--fail-on-policy", is_flag=True, help="Exit 1 when no release candidate passes every policy check.")
def report(
    directory: Path,
    lang: str,
    policy_path: Path | None,
    claims_path: Path | None,
    no_plots: bool,
    with_html: bool,
    fail_on_policy: bool,
) -> None:
    """(Re)render report.md / report.th.md and plots/*.png from DIR/results.json, without measuring."""

    result = RunResult.load(directory)
    out_dir = directory if directory.is_dir() else directory.parent
    policy = policy_for(result, policy_path)
    claims = claims_for(result, claims_path)
    written = write_report(
        result, out_dir, langs=(lang,), policy=policy, draw=not no_plots, claims=claims, html=with_html
    )
    click.echo(str(out_dir / REPORT_FILES[lang]))
    log(
        f"recommendation: {written.recommendation or 'none'} · release checks: "
        f"{'pass' if written.verdict.passed else 'fail'}"
    )
    if fail_on_policy and not written.verdict.passed:
        raise VerdictFailed("release checks failed: no release candidate passes every check of the policy")


if __name__ == "__main__":  # pragma: no cover
    main()
