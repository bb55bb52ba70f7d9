"""``bench variants list/build/check``: enumerate, derive and verify a model's variants."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench.cli.common import emit_json, json_option, model_dir_option, split_names
from bench.console import log
from bench.errors import InputError


def recipes_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--recipes",
        type=click.Path(path_type=Path),
        default=None,
        help="Recipes file (default: ./variants/recipes.toml, then the bundled one; a model folder's "
        "own recipes.toml overrides single recipes).",
    )(f)


@click.group()
def variants() -> None:
    """List, build and verify a model's variants (fp32, fp16, int8, uint8, q4, q4f16, bnb4).

    \b
      bench variants list  --model-dir DIR          what is on disk: size, precision, quant ops, params, sha256
      bench variants build --model-dir DIR          derive the missing variants from onnx/model.onnx
      bench variants check --model-dir DIR          each variant vs fp32 on a seeded probe batch (exit 1 if off)
    """


@variants.command("list")
@model_dir_option
@json_option("the variants")
def variants_list(model_dir: Path | None, as_json: bool) -> None:
    """Every variant file in the model folder (nothing is built): name, file, size, precision, op types,
    parameter count, sha256 and, when built by bench, its recipe."""
    from bench.bundle import Bundle, resolve_model_dir
    from bench.console import print_table, variants_table
    from bench.variants import list_variants

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
    from bench.bundle import Bundle, resolve_model_dir
    from bench.console import build_table, print_table
    from bench.variants import build_variants, load_recipes

    bundle = Bundle.discover(resolve_model_dir(model_dir))
    book = load_recipes(bundle, recipes)
    results = build_variants(bundle, only=split_names(only), force=force, recipes=book, log=log)
    print_table(build_table(results, title=f"bench variants build · {bundle.root}"))
    failed = [r for r in results if r.status == "failed"]
    if failed:  # every recipe was tried; the exit says some could not be built (each reason is in the table)
        raise InputError(
            f"{len(failed)} of {len(results)} recipes failed on this model: {', '.join(r.variant for r in failed)} "
            "(each reason is in the table); the others were tried — leave these out (--only) or change their "
            "recipes (--recipes)"
        )


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
@click.option(
    "--probe-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images in the seeded probe batch."
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the probe batch.")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Probe with the first --probe-size images of this folder (recursive) instead of a random tensor.",
)
@click.option("--no-build", is_flag=True, help="Never build a missing variant named in --only; fail instead (exit 2).")
@recipes_option
@json_option("the check report")
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
    from bench.bundle import Bundle, resolve_model_dir
    from bench.console import check_table, print_table
    from bench.variants import check_variants, load_recipes, parse_tolerances

    bundle = Bundle.discover(resolve_model_dir(model_dir))
    book = load_recipes(bundle, recipes)
    report = check_variants(
        bundle,
        split_names(only),
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
