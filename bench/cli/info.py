"""``bench info`` (where am I measuring) and ``bench schema`` (what a results file may hold)."""

from __future__ import annotations

import json

import click

from bench import __version__
from bench.cli.common import emit_json, json_option


@click.command()
@click.argument("what", type=click.Choice(["results", "compare"]), default="results")
def schema(what: str) -> None:
    """Print the JSON Schema of a results file (results.json) or of `bench compare --json` output.

    The same text as docs/results.schema.json and docs/compare.schema.json. Unknown keys are allowed
    (fields are added over time; old files keep loading).
    """
    from bench.compare import compare_schema
    from bench.results import results_schema, schema_text

    emit_json(schema_text(results_schema() if what == "results" else compare_schema()).rstrip("\n"))


@click.command()
@json_option("the environment object")
def info(as_json: bool) -> None:
    """Environment fingerprint and which providers are usable here, with the reason when not."""
    from bench.console import print_environment
    from bench.engine import probe_provider
    from bench.environment import fingerprint, provider_libraries
    from bench.providers import PROVIDER_NAMES

    env = fingerprint()
    env["providers"] = {name: {**probe_provider(name), **provider_libraries(name)} for name in PROVIDER_NAMES}
    if as_json:
        emit_json(json.dumps(env, indent=2))
        return
    print_environment(env, __version__)
    features = env["cpu"].get("features")  # what fast int8/fp16/bf16 kernels need (bench.cpufeatures)
    shown = (", ".join(features) or "none of those bench tracks") if features is not None else "unknown"
    click.echo(f"CPU features: {shown}")
    listed: set[str] = set()  # tensorrt loads CUDA's libraries too: each library and each fix is said once
    for name, state in env["providers"].items():
        fresh = [lib for lib in state["libraries"] if lib["name"] not in listed]
        if not fresh:
            continue
        also = " (and the libraries above)" if len(fresh) < len(state["libraries"]) else ""
        click.echo(f"{name} libraries{also} ({state['extra']} installs the pip ones):")
        for lib in fresh:
            where = lib["found"] or f"missing (looked in {', '.join(lib['looked'])})"
            optional = "" if lib["required"] else " [optional]"
            click.echo(f"  {lib['name']:<22} {lib['what']}{optional}: {where}")
        if state["fix"]:
            click.echo(f"  fix: {state['fix']}")
        if state["driver_missing"] and "libcuda.so.1" in {lib["name"] for lib in fresh}:
            click.echo("  fix: install the NVIDIA driver (libcuda.so.1 comes with it, not with pip)")
        listed.update(lib["name"] for lib in fresh)
