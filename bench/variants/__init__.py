"""Variants of a model: find them on disk, derive them from fp32 by recipe, and verify them against fp32.

One module per concept: :mod:`~bench.variants.recipes` (``recipes.toml``: how each variant is made and
its tolerance), :mod:`~bench.variants.names` (variant order, ``--variant`` parsing),
:mod:`~bench.variants.inspection` (what a variant file holds: precision, quant ops, parameters),
:mod:`~bench.variants.methods` (the converter each recipe method calls) with :mod:`~bench.variants.fp16`
(graph fixes for the float16 conversion), :mod:`~bench.variants.build` (atomic, cached builds) with
:mod:`~bench.variants.sidecar` (``model_<name>.json``: how a file was built, staleness), and
:mod:`~bench.variants.check` (each variant vs fp32 on a probe batch). Import from here; the names
below are the package's public API.
"""

from __future__ import annotations

from bench.variants.build import PROTOBUF_LIMIT, BuildResult, LogFn, build_variant, build_variants, ensure_variant
from bench.variants.check import CheckReport, VariantCheck, check_variants, parse_tolerances
from bench.variants.fp16 import drop_noop_casts
from bench.variants.inspection import (
    QUANT_OP_PATTERN,
    VariantInfo,
    count_parameters,
    describe_precision,
    inspect_variant,
    list_variants,
)
from bench.variants.methods import TARGET_OPS
from bench.variants.names import parse_variants, variant_order
from bench.variants.recipes import (
    METHOD_PARAMS,
    RECIPES_FILE,
    Recipe,
    RecipeBook,
    Tolerance,
    default_recipes_path,
    load_recipes,
    recipe_names,
)
from bench.variants.sidecar import stale_reason, tool_versions

__all__ = [
    "METHOD_PARAMS",
    "PROTOBUF_LIMIT",
    "QUANT_OP_PATTERN",
    "RECIPES_FILE",
    "TARGET_OPS",
    "BuildResult",
    "CheckReport",
    "LogFn",
    "Recipe",
    "RecipeBook",
    "Tolerance",
    "VariantCheck",
    "VariantInfo",
    "build_variant",
    "build_variants",
    "check_variants",
    "count_parameters",
    "default_recipes_path",
    "describe_precision",
    "drop_noop_casts",
    "ensure_variant",
    "inspect_variant",
    "list_variants",
    "load_recipes",
    "parse_tolerances",
    "parse_variants",
    "recipe_names",
    "stale_reason",
    "tool_versions",
    "variant_order",
]
