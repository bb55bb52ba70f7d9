"""Variant names: the order bench lists them in, and what ``--variant fp32,int8`` or ``all`` selects."""

from __future__ import annotations

from collections.abc import Sequence

from bench.bundle import KNOWN_VARIANTS, Bundle
from bench.errors import InputError
from bench.variants.recipes import recipe_names


def variant_order(names: Sequence[str]) -> list[str]:
    """fp32 first, then the CLI.md names in their order, then anything else alphabetically."""
    rank = {n: i for i, n in enumerate(KNOWN_VARIANTS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def parse_variants(text: str, bundle: Bundle) -> list[str]:
    """``"fp16"``, ``"fp32,int8"`` or ``"all"`` → variant names; ``all`` = fp32 + every recipe + on disk."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise InputError("no variant given; pass --variant NAME[,NAME...] or all")
    if names == ["all"]:
        return variant_order(list(dict.fromkeys(["fp32", *recipe_names(bundle), *bundle.variants])))
    return list(dict.fromkeys(names))
