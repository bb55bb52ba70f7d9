"""``bench profile``: where one variant spends its time (ORT's profiler, its own session), its FLOPs, and how
close it runs to this machine's measured peak; with ``--against`` the op-type deltas that explain a slowdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from bench.cli.common import emit_json, json_option, model_dir_option, no_build_option
from bench.cli.options import build, setting_options
from bench.console import log
from bench.errors import CellNotRun, InputError
from bench.options import SessionSpec


@click.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True, help="Variant to profile (one).")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (one).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Images per call.")
@click.option(
    "--against",
    type=click.Path(path_type=Path),
    default=None,
    help="A second model folder (the baseline): per op type a_ms, b_ms, delta_ms and the share of the timed "
    "end-to-end delta they explain.",
)
@click.option("--against-variant", default=None, help="The baseline's variant (default: --variant).")
@click.option(
    "--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Profiled calls (after 3 warm-ups)."
)
@click.option("--refresh-peak", is_flag=True, help="Re-measure this machine's GEMM peak instead of the cached one.")
@click.option("--no-peak", is_flag=True, help="Skip the peak (no fraction_of_peak): saves ~2 s on a first run.")
@click.option(
    "--trace", type=click.Path(path_type=Path), default=None, help="Keep ORT's JSON trace here (chrome://tracing)."
)
@setting_options(SessionSpec)
@no_build_option
@json_option("the profile")
def profile(
    model_dir: Path | None,
    variant: str,
    provider: str,
    batch_size: int,
    against: Path | None,
    against_variant: str | None,
    runs: int,
    refresh_peak: bool,
    no_peak: bool,
    trace: Path | None,
    no_build: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Where the time goes: per op type and per node (ORT's profiler), FLOPs, GFLOP/s and fraction of peak.

    The profile is taken in its own session, after a plain session timed the bare calls: it never inflates
    a reported figure. FLOPs are 2 × MACs of Conv/MatMul/Gemm/attention nodes from their shapes; other op
    types are listed as not counted. Exit 3 when the provider cannot run here.
    """
    from bench.bundle import Bundle, resolve_model_dir
    from bench.cpufeatures import cpu_features, variant_note
    from bench.engine import ModelLoadError, ProviderUnavailable
    from bench.profile.explain import profile_against, top_line
    from bench.profile.peak import machine_peak
    from bench.profile.profiler import profile_model
    from bench.profile.render import profile_lines
    from bench.providers import parse_providers
    from bench.variants import ensure_variant

    providers = parse_providers(provider)
    if len(providers) != 1 or "," in variant or variant == "all":
        raise InputError("bench profile takes one variant on one provider; pass single names")
    spec = build(SessionSpec, kw)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    path = ensure_variant(bundle, variant, allow_build=not no_build, log=log)
    try:
        if against is not None or against_variant is not None:
            base_bundle = Bundle.discover(against) if against is not None else bundle
            base = ensure_variant(base_bundle, against_variant or variant, allow_build=not no_build, log=log)
            _, _, explanation = profile_against(base, path, providers[0], spec, batch_size, runs=runs)
            if as_json:
                emit_json(json.dumps(explanation, indent=2))
                return
            click.echo(f"B {path} vs A {base} · {providers[0]} · batch {batch_size}")
            click.echo(
                f"end-to-end (timed, interleaved): A {explanation['a_p50_ms']:.4g} ms, B {explanation['b_p50_ms']:.4g} "
                f"ms, delta {explanation['e2e_delta_ms']:+.4g} ms"
            )
            click.echo(f"largest op-type deltas: {top_line(explanation['op_types'], 5)}")
            share = explanation["explained"]
            click.echo(
                f"explained: {share:.0%} of the end-to-end delta" if share is not None else explanation["explained_why"]
            )
            return
        peak = None if no_peak else machine_peak(providers[0], spec.threads, refresh=refresh_peak)
        result = profile_model(
            path,
            providers[0],
            spec,
            batch_size,
            runs=runs,
            variant=variant,
            peak=dict(peak or {}) or None,
            keep_trace=trace,
        )
    except (ProviderUnavailable, ModelLoadError) as exc:
        raise CellNotRun(str(exc)) from exc
    data = result.as_dict()
    # a variant whose fast kernels need a CPU feature this CPU lacks (int8 without VNNI, fp16 without native fp16)
    data["cpu_note"] = variant_note(variant, providers[0], cpu_features())
    if as_json:
        emit_json(json.dumps(data, indent=2))
        return
    for line in profile_lines(data):
        click.echo(line)
    if data["cpu_note"]:
        click.echo(f"note: {data['cpu_note']}")
