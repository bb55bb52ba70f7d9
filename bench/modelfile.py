"""What a model file is: its name, size, sha256 and, when bench built it, the recipe its sidecar records.

Every result names the exact file it measured (``model``), and a built variant is stale when the sha256
of its base no longer matches its sidecar; both need only the file itself, so this sits at the bottom
of the layers where the runner, the evaluator and the variants all can use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.results import ModelInfo


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_info(path: Path) -> ModelInfo:
    """File name, size and sha256 of a model file, plus its build recipe when a sidecar records one."""
    recipe = None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            recipe = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            recipe = None
    size_mb = round(path.stat().st_size / 1e6, 3)
    return ModelInfo(file=path.name, size_mb=size_mb, sha256=file_sha256(path), recipe=recipe)


def output_width(path: Path) -> int | None:
    """Number of classes from the graph's first output (labels of a bare folder of .onnx files), if static."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.output[0].type.tensor_type.shape.dim
    last = dims[-1].dim_value if dims else 0
    return int(last) or None
