"""Discover a model directory: variants by file name, labels, preprocessing.

Two layouts: the transformers.js / onnx-community one (``config.json``, ``preprocessor_config.json``,
``onnx/model*.onnx``) and a bare folder of ``.onnx`` files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import InputError
from bench.preprocess import ConfigFieldError, PreprocessConfig

KNOWN_VARIANTS = ("fp32", "fp16", "int8", "uint8", "quantized", "q4", "q4f16", "bnb4")
# Eager PyTorch rows (bench.torch_engine): fp32, and half precision on CUDA. Not ONNX files: they run the
# Hugging Face checkpoint (config.json + one of PYTORCH_WEIGHT_FILES) in the model folder itself.
PYTORCH_VARIANTS = ("pytorch", "pytorch-fp16")
PYTORCH_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
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


def is_pytorch_variant(variant: str) -> bool:
    """Whether ``variant`` runs the PyTorch checkpoint rather than an ONNX file."""
    return variant in PYTORCH_VARIANTS


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
    def discover(cls, path: str | Path, flag: str = "--model-dir") -> Bundle:
        """Read a model directory; raise InputError naming what was looked for (and the ``flag`` that gave it)
        when it holds no model."""
        root = Path(path).expanduser()
        if not root.exists():
            raise InputError(f"model dir {root} does not exist; pass {flag} DIR (a folder with onnx/model.onnx)")
        if root.is_file():
            raise InputError(f"{flag} must be a folder, got the file {root}; pass its parent folder")
        onnx_dir = root / "onnx" if (root / "onnx").is_dir() else root
        variants = {variant_name(p): p for p in sorted(onnx_dir.glob("*.onnx"))}
        config = _read_json(root / "config.json")
        preprocessor = _read_json(root / "preprocessor_config.json")
        if not variants and not (config is not None and _pytorch_weights(root)):
            raise InputError(
                f"no model in {root}: looked for onnx/model*.onnx, *.onnx and config.json + "
                f"{' or '.join(PYTORCH_WEIGHT_FILES)}; pass {flag} pointing at a transformers.js-style "
                "bundle, a Hugging Face checkpoint or a folder of .onnx files"
            )
        return cls(root=root, onnx_dir=onnx_dir, variants=variants, config=config or {}, preprocessor=preprocessor)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def variant_path(self, variant: str) -> Path:
        """Path where ``variant`` lives (or would be built)."""
        return self.variants.get(variant) or self.onnx_dir / variant_filename(variant)

    @property
    def pytorch_weights(self) -> Path | None:
        """The PyTorch checkpoint next to config.json (safetensors preferred), or None."""
        return _pytorch_weights(self.root) if (self.root / "config.json").is_file() else None

    @property
    def pytorch_variants(self) -> list[str]:
        """The PyTorch rows this folder can offer: all of them when it holds a checkpoint, else none."""
        return list(PYTORCH_VARIANTS) if self.pytorch_weights is not None else []

    def require_pytorch_weights(self, variant: str) -> Path:
        """The checkpoint a PyTorch variant runs; InputError naming what is missing otherwise."""
        weights = _pytorch_weights(self.root)
        has_config = (self.root / "config.json").is_file()
        if weights is not None and has_config:
            return weights
        missing = [
            name
            for name, absent in (("config.json", not has_config), (" or ".join(PYTORCH_WEIGHT_FILES), weights is None))
            if absent
        ]
        raise InputError(
            f"variant {variant!r} needs a Hugging Face checkpoint in {self.root}, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing there; put the checkpoint (config.json + "
            "model.safetensors) in the model folder or choose an ONNX variant"
        )

    def pytorch_labels(self) -> dict[int, str]:
        """The labels transformers gives the checkpoint: config.json's id2label, else LABEL_0..LABEL_k-1."""
        id2label = self.config.get("id2label")
        if id2label:
            return {int(k): str(v) for k, v in id2label.items()}
        return {i: f"LABEL_{i}" for i in range(int(self.config.get("num_labels") or 2))}

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
        """Preprocessing from preprocessor_config.json, else HF ViT defaults at the model's input size; a malformed
        field is an InputError naming the file and the field (exit 2, not a failed inference)."""
        try:
            return PreprocessConfig.from_json(self.preprocessor or {}, fallback_hw=fallback_hw)
        except ConfigFieldError as exc:
            where = self.root / "preprocessor_config.json"
            raise InputError(f"{where}: {exc}; fix the field or remove it (the default is then used)") from exc


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
        if len(labels) > 2:  # an ImageNet-style classifier, not a real/fake detector: say how to score one class
            first = min(labels)
            return None, (
                f"no label names the fake class of this {len(labels):,}-class model ({_label_list(labels)}); pass "
                f"--positive-label NAME|INDEX (e.g. --positive-label {first} or --positive-label "
                f"{labels[first]!r}) to score that class against the rest"
            )
        return None, f"no label names the fake class ({_label_list(labels)}); pass --positive-label NAME|INDEX"
    return None, f"several labels could be the fake class ({_label_list(labels)}); pass --positive-label NAME|INDEX"


def label_summary(labels: Mapping[int, str], shown: int = 6) -> str:
    """A few labels, not all: a 1,000-class model's full list made a 70 KB error line (#29)."""
    items = [f"{i}={n}" for i, n in sorted(labels.items())]
    if len(items) <= shown + 1:
        return ", ".join(items)
    return f"{len(items):,} labels: " + ", ".join(items[:shown]) + f", …, {items[-1]}"


_label_list = label_summary


def _pytorch_weights(root: Path) -> Path | None:
    return next((root / name for name in PYTORCH_WEIGHT_FILES if (root / name).is_file()), None)


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
