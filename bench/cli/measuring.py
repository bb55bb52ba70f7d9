"""Commands that time one model: ``bench run`` and ``bench calibrate``.

Options come from the settings declared on RunOptions and its parts (bench.options); the library is imported
when a command runs, so ``bench run --help`` loads neither numpy nor onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.cli.common import (
    emit_json,
    finish_cells,
    json_option,
    model_dir_option,
    no_build_option,
    out_option,
    provider_option,
)
from bench.cli.options import build, setting_options
from bench.console import log
from bench.errors import InputError
from bench.options import RunOptions


@click.command()
@model_dir_option
@click.option(
    "--variant",
    default="fp32",
    show_default=True,
    help="Variant name (fp32, fp16, int8, q4, bnb4, ...), a comma list, or all.",
)
@provider_option
@setting_options(RunOptions, exclude=("rounds",))
@no_build_option
@click.option(
    "--dataset",
    type=click.Path(path_type=Path),
    default=None,
    help="Use real images from this folder as the input batch (default: a seeded random tensor).",
)
@json_option("the RunResult")
@out_option()
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
    from bench.bundle import Bundle, resolve_model_dir
    from bench.commands import run_cells
    from bench.console import cell_progress, cells_table, print_table
    from bench.providers import parse_providers
    from bench.variants import parse_variants

    options = build(RunOptions, kw)
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


@click.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant to calibrate (one).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (one).")
@setting_options(RunOptions, exclude=("rounds",))
@no_build_option
@click.option(
    "--runs", type=click.IntRange(min=2), default=10, show_default=True, help="A/A gates (and separate runs) to make."
)
@click.option(
    "--blocks",
    type=click.IntRange(min=1),
    default=None,
    help="Replicates per side per gate (default: as bench ab chooses).",
)
@click.option("--target-mde", default="5%", show_default=True, help="The smallest slowdown the gate should catch.")
@click.option("--latency-tolerance", default="10%", show_default=True, help="The gate's tolerance (as in compare).")
@click.option(
    "--cross-run/--no-cross-run",
    default=True,
    show_default=True,
    help="Also make separate runs in fresh processes and compare them (the cross-run false-alarm rate).",
)
@json_option("the calibration")
@out_option("Write calibration.json here (e.g. beside a baseline's results.json: compare then uses it).")
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
    from bench.bundle import Bundle, resolve_model_dir
    from bench.calibrate import run_calibration, write_calibration
    from bench.calibrate import summary_lines as calibration_lines
    from bench.compare import Tolerances, parse_tolerance
    from bench.providers import parse_providers

    providers = parse_providers(provider)
    if len(providers) != 1 or "," in variant or variant == "all":
        raise InputError("bench calibrate measures one variant on one provider; pass single names")
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    calibration = run_calibration(
        bundle,
        variant,
        providers[0],
        build(RunOptions, kw),
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
