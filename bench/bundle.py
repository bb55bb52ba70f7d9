"""Discover a model directory: variants by file name, labels, preprocessing.

Two layouts: the transformers.js / onnx-community one (``config.json``, ``preprocessor_config.json``,
``onnx/model*.onnx``) and a bare folder of ``.onnx`` files.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError
from bench.preprocess import PreprocessConfig

KNOWN_VARIANTS = ("fp32", "fp16", "int8", "uint8", "quantized", "q4", "q4f16", "bnb4")
POSITIVE_LABEL_NAMES = ("fake", "deepfake", "spoof", "manipulated", "generated", "ai", "artificial")
PACKAGE_DATA = Path(__file__).parent / "_data"
SOURCE_TREE = Path(__file__).resolve().parent.parent


def variant_filename(variant: str) -> str:
    """``fp32`` → ``model.onnx``; any other name → ``model_<name>.onnx``."""
    return "model.onnx" if variant == "fp32" else f"model_{variant}.onnx"


def variant_name(path: Path) -> str:
    """``model.onnx`` → ``fp32``, ``model_fp16.onnx`` → ``fp16``; other file names → their stem."""
    stem = path.stem
    if stem == "model":
        return "fp32"
    if stem.startswith("model_"):
        return stem[len("model_") :]
    return stem


def find_default(kind: str, flag: str | Path | None, env_var: str) -> Path:
    """CLI.md discovery: flag → env → ./<kind>/demo → the copy in the package → the source checkout."""
    if flag:
        return Path(flag)
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    for candidate in (Path.cwd() / kind / "demo", PACKAGE_DATA / kind / "demo", SOURCE_TREE / kind / "demo"):
        if candidate.is_dir():
            return candidate
    flag_name = "--model-dir" if kind == "variants" else "--dataset"
    raise InputError(f"no {kind} given and no bundled demo found; pass {flag_name}")


def resolve_model_dir(flag: str | Path | None) -> Path:
    """The model directory a command uses when the user gives none (CLI.md, defaults)."""
    return find_default("variants", flag, "BENCH_MODEL_DIR")


@dataclass
class Bundle:
    """A model directory: its variant files, labels and preprocessing."""

    root: Path
    onnx_dir: Path
    variants: dict[str, Path]
    config: dict[str, Any] = field(default_factory=dict)
    preprocessor: dict[str, Any] | None = None

    @classmethod
    def discover(cls, path: str | Path) -> Bundle:
        """Read a model directory; raise InputError naming what was looked for when it holds no model."""
        root = Path(path).expanduser()
        if not root.exists():
            raise InputError(f"model dir {root} does not exist; pass --model-dir DIR (a folder with onnx/model.onnx)")
        if root.is_file():
            raise InputError(f"--model-dir must be a folder, got the file {root}; pass its parent folder")
        onnx_dir = root / "onnx" if (root / "onnx").is_dir() else root
        variants = {variant_name(p): p for p in sorted(onnx_dir.glob("*.onnx"))}
        config = _read_json(root / "config.json")
        preprocessor = _read_json(root / "preprocessor_config.json")
        if not variants:
            raise InputError(
                f"no model in {root}: looked for onnx/model*.onnx and *.onnx; "
                "pass --model-dir pointing at a transformers.js-style bundle or a folder of .onnx files"
            )
        return cls(root=root, onnx_dir=onnx_dir, variants=variants, config=config or {}, preprocessor=preprocessor)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def variant_path(self, variant: str) -> Path:
        """Path where ``variant`` lives (or would be built)."""
        return self.variants.get(variant) or self.onnx_dir / variant_filename(variant)

    def refresh(self) -> None:
        """Re-scan the variant files (after a build)."""
        self.variants = {variant_name(p): p for p in sorted(self.onnx_dir.glob("*.onnx"))}

    def labels(self, num_outputs: int | None = None) -> dict[int, str]:
        """``id2label`` from config.json; a bare folder gets "0".."k-1" from the output width."""
        id2label = self.config.get("id2label")
        if id2label:
            return {int(k): str(v) for k, v in id2label.items()}
        if num_outputs:
            return {i: str(i) for i in range(num_outputs)}
        return {}

    def preprocess_config(self, fallback_hw: tuple[int, int] | None = None) -> PreprocessConfig:
        """Preprocessing from preprocessor_config.json, else HF ViT defaults at the model's input size."""
        return PreprocessConfig.from_json(self.preprocessor or {}, fallback_hw=fallback_hw)


def positive_index(labels: dict[int, str], override: str | int | None = None) -> tuple[int | None, str | None]:
    """Index of the positive ("fake") class, or None with the reason (CLI.md, defaults)."""
    if override is not None and str(override) != "":
        text = str(override)
        for idx, name in labels.items():
            if name.lower() == text.lower():
                return idx, None
        if text.lstrip("-").isdigit() and int(text) in labels:
            return int(text), None
        return None, f"--positive-label {text!r} matches no label of the model ({_label_list(labels)})"
    if not labels:
        return None, "the model has no labels; pass --positive-label NAME|INDEX"
    pattern = re.compile(r"^(" + "|".join(POSITIVE_LABEL_NAMES) + r")$", re.IGNORECASE)
    matches = [idx for idx, name in labels.items() if pattern.match(name.strip())]
    if len(matches) == 1:
        return matches[0], None
    if not matches:
        return None, f"no label names the fake class ({_label_list(labels)}); pass --positive-label NAME|INDEX"
    return None, f"several labels could be the fake class ({_label_list(labels)}); pass --positive-label NAME|INDEX"


def _label_list(labels: dict[int, str]) -> str:
    return ", ".join(f"{i}={n}" for i, n in sorted(labels.items()))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data
