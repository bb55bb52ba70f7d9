"""The regression gate: ``bench compare`` (two results files) and ``bench ab`` (two sides measured interleaved)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.cli.common import json_option, model_dir_option, no_build_option
from bench.cli.options import build, setting_options
from bench.console import log
from bench.evaluate import EvalSpec
from bench.options import ISOLATIONS, MAX_BLOCKS, MIN_BLOCKS, RunOptions

if TYPE_CHECKING:
    from bench.compare import CompareResult, Tolerances


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
    from bench.compare import Tolerances

    return Tolerances.parse(
        latency=kw.pop("latency_tolerance"),
        accuracy=kw.pop("accuracy_tolerance"),
        memory=kw.pop("memory_tolerance"),
        size=kw.pop("size_tolerance"),
    )


def _emit_compare(
    result: CompareResult, as_json: bool, summary: Path | None, title: str, markdown: str | None = None
) -> None:
    log(f"{title}: {result.summary_line()}")
    markdown = markdown or result.to_markdown(title)
    if summary is not None:
        with summary.open("a", encoding="utf-8") as fh:
            fh.write(markdown + "\n")
    click.echo(result.to_json() if as_json else markdown)


@click.command()
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
@click.option(
    "--explain",
    is_flag=True,
    help="Profile both sides' model files (when still here, same sha256) and attach the top op-type deltas to "
    "each latency regression.",
)
@json_option("the CompareResult")
def compare(
    baseline: Path,
    current: Path,
    cross_machine: bool,
    calibration: Path | None,
    explain: bool,
    as_json: bool,
    **kw: Any,
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
    from bench.calibrate import calibration_beside, load_calibration
    from bench.compare import compare_runs, load_pair

    tolerances = _tolerances(kw)
    base, cur = load_pair(baseline, current)
    calibration = calibration or calibration_beside(baseline)
    result = compare_runs(
        base,
        cur,
        tolerances,
        cross_machine=cross_machine,
        labels=(baseline, current),
        calibration=load_calibration(calibration) if calibration is not None else None,
    )
    if explain and result.regressions():
        from bench.profile.explain import explain_regressions

        explain_regressions(result.rows, base, cur, log=log)
    _emit_compare(result, as_json, kw["summary"], "bench compare")
    result.raise_for_verdict(fail_on_inconclusive=kw["fail_on_inconclusive"])


@click.command()
@model_dir_option
@click.option(
    "--variant",
    default="fp32",
    show_default=True,
    help="Variant measured in --model-dir (the new side). A comma list or all (or several --batch-sizes): a "
    "whole matrix, each cell against its namesake in --against, one cell after the other, every row of every "
    "cell held together by Holm (fixed design).",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    default=None,
    help="The baseline model folder (the old model); same variant unless --against-variant.",
)
@click.option("--against-variant", default=None, help="The baseline variant (in --against, else in --model-dir).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (one).")
@setting_options(RunOptions, exclude=("rounds", "target_precision"))
@click.option(
    "--batch-sizes",
    "batch_sizes_text",
    default=None,
    help="Comma list of batch sizes, each a cell (as bench matrix); replaces --batch-size.",
)
@no_build_option
@click.option(
    "--sequential/--fixed",
    default=True,
    show_default=True,
    help="--sequential (the default): blocks in AB/BA pairs, a look after every pair at a confidence sequence "
    "valid at every look; stops at regression, improvement or same, and at --max-time (or twice its timed work) "
    "answers inconclusive with the MDE. --fixed (also whenever --blocks N is given): a fixed number of blocks, "
    "judged by a two-level bootstrap.",
)
@click.option(
    "--blocks",
    type=click.IntRange(min=1),
    default=None,
    help="The fixed design: replicates per side, interleaved in a randomised balanced order (AB/BA); the timed "
    f"calls per side are spread over them. With --fixed and no --blocks: as many as the timed work pays for "
    f"({MIN_BLOCKS}–{MAX_BLOCKS}), from the cost of a probe session.",
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
@setting_options(EvalSpec, exclude=("strict",), defaults={"threshold": 0.5})
@click.option(
    "--perturb",
    "perturb",
    multiple=True,
    help="With --dataset: also compare accuracy under perturbations (repeatable; as in bench eval).",
)
@click.option(
    "--explain/--no-explain",
    default=True,
    show_default=True,
    help="Attach the top op-type deltas (ORT profiles of both sides, after the verdict) to a latency regression; "
    "--no-explain saves that time in CI.",
)
@click.option(
    "--memory/--no-memory",
    "isolated_memory",
    default=True,
    show_default=True,
    help="Measure each side's memory in a short run in its own process.",
)
@tolerance_options
@json_option("the CompareResult")
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
    sequential: bool,
    blocks: int | None,
    isolation: str,
    dataset: Path | None,
    positive_label: str | None,
    threshold: float,
    isolated_memory: bool,
    perturb: tuple[str, ...],
    explain: bool,
    as_json: bool,
    out: Path | None,
    no_build: bool,
    batch_sizes_text: str | None,
    **kw: Any,
) -> None:
    """Measure two model folders (or two variants) alternately in one job, then compare.

    The noise-robust release gate: both sides share the machine's state and its neighbours' load, block
    by block; each block is a fresh session (or process). By default (--sequential) blocks come in AB/BA
    pairs and stop as soon as the latency verdict is settled (a confidence sequence, valid at every look);
    --fixed or --blocks N measures a fixed number of blocks and the verdict resamples blocks, then calls.
    Without --min-time each side is timed for at least a few seconds. Without --threads on a CPU whose
    other processes hold cores ORT's threads would need, both sides run with fewer threads (said, and
    recorded as config.threads_why); --threads 0 keeps ORT's default.
    Exit 0 pass (also with inconclusive rows, unless --fail-on-inconclusive) · 1 regression (the
    --model-dir side is worse) · 2 bad input.
    """
    from bench.ab import ab_markdown, run_ab, write_ab
    from bench.options import parse_batch_sizes

    tolerances = _tolerances(kw)
    summary, fail_on_inconclusive = kw.pop("summary"), kw.pop("fail_on_inconclusive")
    result, base_run, cur_run = run_ab(
        model_dir,
        variant,
        against,
        against_variant,
        provider,
        build(RunOptions, kw),
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
        sequential=sequential,
        batch_sizes=parse_batch_sizes(batch_sizes_text) if batch_sizes_text else (),
    )
    if explain and result.regressions():
        from bench.profile.explain import explain_regressions

        explain_regressions(result.rows, base_run, cur_run, log=log)
    if out is not None:
        write_ab(out, result, base_run, cur_run)
        log(f"wrote {out}/compare.json, compare.md, baseline/ and current/")
    _emit_compare(result, as_json, summary, "bench ab", ab_markdown(result))
    result.raise_for_verdict(fail_on_inconclusive=fail_on_inconclusive)
