"""Labelled image sets: folder-per-class and CSV/JSONL manifests; plain image folders."""

from __future__ import annotations

from pathlib import Path

from bench.bundle import find_default
from bench.errors import InputError
from bench.preprocess import IMAGE_SUFFIXES


def resolve_dataset(flag: str | Path | None) -> Path:
    """The dataset a command uses when the user gives none (CLI.md, defaults)."""
    return find_default("datasets", flag, "BENCH_DATASET")


def image_files(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a folder")
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def fingerprint(root: Path, items: list[tuple[Path, str | None]]) -> dict[str, object]:
    """The results contract's dataset object: path, n, sha256 of sorted (relpath, size, label)."""
    import hashlib

    rows = sorted(
        (p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p), p.stat().st_size, label or "")
        for p, label in items
    )
    digest = hashlib.sha256("\n".join(f"{r}\t{s}\t{label}" for r, s, label in rows).encode()).hexdigest()
    return {"path": str(root), "n": len(rows), "fingerprint": digest}
