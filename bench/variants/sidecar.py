"""The sidecar next to each built variant: ``model_<name>.json`` says exactly how the file was made.

It records the recipe, its parameters, the base file's sha256, the output's sha256 and the versions of
every tool involved; :func:`bench.modelfile.model_info` reads it into each result's ``model.recipe``, and
:func:`stale_reason` compares the recorded base sha256 with the base file on disk.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from bench import __version__
from bench.bundle import Bundle
from bench.modelfile import file_sha256, model_info
from bench.variants.recipes import Recipe


def write_sidecar(out: Path, recipe: Recipe, source: Path, built: Path, seconds: float) -> None:
    """Write ``out``'s sidecar (``model_<name>.json``) atomically, describing ``built`` (not yet renamed to ``out``)."""
    src = model_info(source)
    product = model_info(built)
    document = {
        "variant": recipe.name,
        "recipe": recipe.name,
        "method": recipe.method,
        "tool": recipe.tool,
        "summary": recipe.summary(),
        "description": recipe.description,
        "params": recipe.params,
        "base": {"variant": recipe.base, "file": source.name, "sha256": src.sha256, "size_mb": src.size_mb},
        "output": {"file": out.name, "sha256": product.sha256, "size_mb": product.size_mb},
        "tools": tool_versions(),
        "recipes_file": recipe.source,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 3),
    }
    sidecar = out.with_suffix(".json")
    partial = sidecar.parent / f".{sidecar.name}.{os.getpid()}.tmp"
    try:
        partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, sidecar)
    finally:
        partial.unlink(missing_ok=True)


def tool_versions() -> dict[str, str | None]:
    """Versions of everything that shapes a built file (recorded in each sidecar)."""
    from importlib import metadata

    import onnxruntime

    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "bench": __version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": dist("onnx"),
        "onnxconverter-common": dist("onnxconverter-common"),
        "onnx-ir": dist("onnx-ir"),
        "numpy": dist("numpy"),
    }


def stale_reason(bundle: Bundle, variant: str) -> str | None:
    """Why ``variant`` is out of date with the file it was built from, or None (also when bench did not build it)."""
    sidecar = bundle.variants[variant].with_suffix(".json")
    try:
        base = json.loads(sidecar.read_text(encoding="utf-8"))["base"]
        base_path = bundle.variant_path(base["variant"])
        recorded = base["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not base_path.is_file() or file_sha256(base_path) == recorded:
        return None
    return f"{variant} is stale: {base_path.name} changed since {bundle.variants[variant].name} was built from it"
