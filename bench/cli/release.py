"""Release reports: ``bench matrix`` (every variant × provider × batch, then the report) and ``bench report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bench.cli.common import (
    emit_json,
    json_option,
    model_dir_option,
    no_build_option,
    perturb_option,
)
from bench.cli.options import build, setting_options
from bench.console import log
from bench.errors import CellNotRun, InputError, VerdictFailed
from bench.evaluate import EvalSpec
from bench.options import RunOptions
from bench.service.harness import ServiceRunSpec

POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command()
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
@setting_options(RunOptions, exclude=("batch_size",))
@no_build_option
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled set for accuracy (evaluated once per variant × provider) and the timed input images. "
    "Default: $BENCH_DATASET, ./datasets/demo, then the bundled demo set.",
)
@click.option("--no-accuracy", is_flag=True, help="Skip accuracy evaluation (latency on a seeded random tensor).")
@perturb_option
@setting_options(EvalSpec, exclude=("strict",))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Release policy TOML (default: the built-in one with the seed report's targets).",
)
@click.option(
    "--cell-timeout",
    type=POSITIVE,
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
@setting_options(ServiceRunSpec)
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
    type=POSITIVE,
    default=120.0,
    show_default=True,
    help="Seconds a cell no node can run waits for one to join before it is recorded unavailable.",
)
@click.option(
    "--profile",
    "with_profile",
    is_flag=True,
    help="After every timed cell, profile each ok cell in a session of its own (ORT's profiler): op-type shares, "
    "GFLOP/s and fraction of this machine's peak in the report's \"Where the time goes\" section.",
)
@click.option("--strict", is_flag=True, help="Exit 3 when any cell did not run (unavailable or failed).")
@click.option("--fail-on-policy", is_flag=True, help="Exit 1 when no release candidate passes every policy check.")
@click.option(
    "--decide",
    "decide_s",
    type=POSITIVE,
    default=None,
    metavar="SECONDS",
    help="When the recommendation is undecided, measure the cells that could change it further (more "
    "replicates, each cell in a fresh process) until it is decided or SECONDS are spent; the report records "
    "the looks. With --resume --out DIR it continues a finished matrix.",
)
@json_option("the RunResult")
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
    claims_path: Path | None,
    with_html: bool,
    with_profile: bool,
    strict: bool,
    fail_on_policy: bool,
    decide_s: float | None,
    as_json: bool,
    out: Path | None,
    no_build: bool,
    **kw: Any,
) -> None:
    """Variants × providers × batch sizes, each cell in its own process; results, report and plots.

    \b
    A crash, OOM or hang of one cell marks it failed and the matrix goes on; Ctrl-C keeps the finished
    cells (exit 130; SIGTERM likewise, exit 143; --resume --out DIR continues); one run per --out at a time
    (a second exits 2 naming the first). Writes results.json/csv after every cell, then
    report.md (English), report.th.md (Thai) and plots/*.png; `bench report DIR` re-renders them.
    Exit: 0 (unavailable cells included) · 1 --fail-on-policy and no candidate passes · 3 --strict and a
    cell did not run.
    """
    from bench.bundle import Bundle, resolve_model_dir
    from bench.console import cells_table, print_table
    from bench.datasets import resolve_dataset
    from bench.executors import make_executor
    from bench.matrix import DEFAULT_PROVIDERS, measure_to_decide, parse_batch_sizes, run_matrix
    from bench.outdir import lock_output, sigterm_as_interrupt, sweep_stale_temp
    from bench.perturb import perturbation_names
    from bench.providers import parse_providers
    from bench.report import load_claims, load_policy, publish_release
    from bench.report.analysis import DECIDE_MAX_ROUNDS, is_decided, more_replicates
    from bench.variants import parse_variants

    if resume and out is None:
        raise InputError("--resume needs --out DIR: the folder of the run to continue (e.g. reports/<run_id>)")
    options = build(RunOptions, kw, batch_size=1)
    service_options = build(ServiceRunSpec, kw)
    providers = parse_providers(providers_text or DEFAULT_PROVIDERS)
    batch_sizes = parse_batch_sizes(batch_sizes_text)
    policy = load_policy(policy_path)
    claims = load_claims(claims_path)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variants_text, bundle)
    if perturb and no_accuracy:
        raise InputError("--perturb needs accuracy evaluation; drop --no-accuracy")
    if decide_s is not None and executor_name != "local":
        raise InputError("--decide adds replicates on this machine; use it with --executor local")
    evaluation = EvalSpec(
        dataset=None if no_accuracy else resolve_dataset(dataset),
        threshold=threshold,
        positive_label=positive_label,
        perturbations=tuple(perturbation_names(perturb)) if perturb else (),
    )
    signals = ctx.with_resource(sigterm_as_interrupt())  # `kill PID` ends like Ctrl-C: cells kept, exit 143
    if out is not None:  # one run per folder (a default --out is a new reports/<run_id>)
        ctx.with_resource(lock_output(out, "bench matrix", log))
    sweep_stale_temp(log=log)
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
            service_options=service_options,
        )
    finally:
        executor.close()
    result, out_dir = outcome.result, outcome.out
    if outcome.interrupted:
        log(
            f"stopped by {signals.name}: continue with `bench matrix ... --resume --out {out_dir}`, "
            f"or render what finished with `bench report {out_dir}`"
        )
        ctx.exit(signals.exit_code)
    if with_profile:  # after every timed cell, each in its own session: never inside a timed figure
        from bench.profile.cells import profile_cells

        profile_cells(result, bundle, options.session, out_dir, log=log)
    report = publish_release(result, out_dir, policy, claims, html=with_html)
    if decide_s is not None:
        record = measure_to_decide(
            bundle,
            result,
            out_dir,
            options,
            decide_s,
            lambda r: more_replicates(r, policy),
            lambda r: is_decided(r, policy),
            evaluation=evaluation,
            cell_timeout_s=cell_timeout,
            max_rounds=DECIDE_MAX_ROUNDS,
            log=log,
        )
        log(
            f"decide: {record.get('rounds', 0)} rounds in {record.get('seconds', 0.0):.0f} s "
            f"(stopped: {record.get('stopped')}); report re-rendered"
        )
        report = publish_release(result, out_dir, policy, claims, html=with_html)
    if as_json:
        emit_json(result.to_json())
    else:
        print_table(cells_table(result.cells, title=f"bench matrix · {bundle.root}"))
    log(
        f"wrote {out_dir / 'results.json'}, results.csv, report.md, report.th.md"
        f"{', report.html, report.th.html' if with_html else ''} and plots/ "
        f"({_cells(outcome.ran)} measured, {_cells(outcome.reused)} kept from the earlier run)"
    )
    for line in report.summary_lines():
        log(line)
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


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


@click.command()
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
    from bench.report import REPORT_FILES, claims_for, policy_for, write_report
    from bench.results import RunResult

    result = RunResult.load(directory)
    out_dir = directory if directory.is_dir() else directory.parent
    policy = policy_for(result, policy_path)
    claims = claims_for(result, claims_path)
    written = write_report(
        result, out_dir, langs=(lang,), policy=policy, draw=not no_plots, claims=claims, html=with_html
    )
    click.echo(str(out_dir / REPORT_FILES[lang]))
    status = (written.detail or {}).get("status")
    log(
        f"recommendation: {written.recommendation or 'none'}{f' ({status})' if status else ''} · release checks: "
        f"{'pass' if written.verdict.passed else 'fail'}"
    )
    if fail_on_policy and not written.verdict.passed:
        raise VerdictFailed("release checks failed: no release candidate passes every check of the policy")
