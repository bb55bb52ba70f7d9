"""Variants of a model: find them on disk, or derive them from fp32 (recipes in variants/recipes.toml)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.bundle import Bundle
from bench.errors import InputError

LogFn = Callable[[str], None]


def recipe_names() -> list[str]:
    """Variant names the recipes can build (none until the recipes land)."""
    return []


def parse_variants(text: str, bundle: Bundle) -> list[str]:
    """``"fp16"``, ``"fp32,int8"`` or ``"all"`` → variant names; ``all`` = on disk + every recipe."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise InputError("no variant given; pass --variant NAME[,NAME...] or all")
    if names == ["all"]:
        return list(dict.fromkeys(["fp32", *recipe_names(), *bundle.variants]))
    return list(dict.fromkeys(names))


def ensure_variant(bundle: Bundle, variant: str, allow_build: bool = True, log: LogFn | None = None) -> Path:
    """Path of ``variant``'s file; build it first when a recipe can and ``allow_build``."""
    if variant in bundle.variants:
        return bundle.variants[variant]
    available = ", ".join(sorted(set(bundle.variants) | set(recipe_names()))) or "none"
    raise InputError(f"variant {variant!r} is not in {bundle.root} and no recipe builds it; available: {available}")
