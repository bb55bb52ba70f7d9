"""Variant names: the order bench lists them in, and what ``--variant fp32,int8`` or ``all`` selects."""

from __future__ import annotations

from collections.abc import Sequence

from bench.bundle import KNOWN_VARIANTS, PYTORCH_VARIANTS, Bundle
from bench.errors import InputError
from bench.variants.recipes import recipe_names


def variant_order(names: Sequence[str]) -> list[str]:
    """fp32 first, then the CLI.md names in their order (PyTorch rows after the ONNX ones), then the rest."""
    rank = {n: i for i, n in enumerate((*KNOWN_VARIANTS, *PYTORCH_VARIANTS))}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def parse_variants(text: str, bundle: Bundle) -> list[str]:
    """``"fp16"``, ``"fp32,int8"``, ``"all"`` or ``"all,pytorch-fp16"`` → variant names.

    ``all`` = fp32 + every recipe + any variant file on disk, + ``pytorch`` when the folder holds a PyTorch
    checkpoint. ``pytorch-fp16`` runs on CUDA only, so it is asked for by name: in ``all`` it would make
    every CPU ``run``/``eval --variant all`` end with an unavailable cell (exit 3).
    """
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise InputError("no variant given; pass --variant NAME[,NAME...] or all")
    if "all" not in names:
        return list(dict.fromkeys(names))
    pytorch = ["pytorch"] if bundle.pytorch_weights is not None else []
    onnx = ["fp32", *recipe_names(bundle), *bundle.variants] if bundle.variants or not pytorch else []
    everything = variant_order(list(dict.fromkeys([*onnx, *pytorch])))
    return list(dict.fromkeys(n for name in names for n in (everything if name == "all" else [name])))
