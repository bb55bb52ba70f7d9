#!/usr/bin/env python3
"""Write the demo detector's PyTorch weights (variants/demo/model.safetensors) from its committed ONNX export.

The demo is a ``transformers.ViTForImageClassification`` exported by ``train_demo.py`` with
``torch.onnx.export``, which keeps every weight as an initializer: the named ones under their module
path (``m.<state-dict key>``), and each ``nn.Linear`` weight transposed into an ``onnx::MatMul_N`` tensor
whose consumer ``Add`` names the layer through its bias. Reading them back is exact (the same float32
bits), so the PyTorch row runs the very weights the ONNX rows run, without re-training:

1. build the architecture from ``config.json`` with the installed transformers (random init);
2. fill every state-dict tensor from the ONNX initializers (``load_state_dict(strict=True)``: a missing
   or extra tensor stops the script);
3. save them with safetensors (``model.safetensors``, float32);
4. check: ONNX Runtime (onnx/model.onnx) and PyTorch on every image of datasets/demo through bench's
   own preprocessing; exit 1 when p(fake) differs by more than 1e-4 on any image.

Usage::

    python variants/export_demo_weights.py [--model-dir variants/demo] [--images datasets/demo]

Needs bench with the torch extra (``pip install -e '.[torch]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.bundle import Bundle, positive_index
from bench.datasets import image_files
from bench.engine import Engine
from bench.preprocess import load_image, preprocess_batch
from bench.torch_engine import TorchEngine

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def state_dict_from_onnx(onnx_path: Path) -> dict[str, np.ndarray]:
    """State-dict key → array, read from the initializers of a ``torch.onnx.export`` of a HF model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, np.ndarray] = {}
    for name, array in inits.items():
        if name.startswith("m."):  # torch.onnx.export names a wrapped model's parameters m.<key>
            out[name[2:]] = array
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith("m."):
            continue
        bias = next(
            (
                i
                for c in consumers.get(node.output[0], [])
                if c.op_type == "Add"
                for i in c.input
                if i.endswith(".bias")
            ),
            None,
        )
        if bias is None:
            raise SystemExit(f"MatMul {node.name} has no bias Add after it: cannot tell which layer it is")
        out[bias[2:].removesuffix(".bias") + ".weight"] = inits[node.input[1]].T.copy()  # ONNX [in, out]
    return out


def export(model_dir: Path) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForImageClassification.from_config(config)
    arrays = state_dict_from_onnx(model_dir / "onnx" / "model.onnx")
    state = {k: torch.tensor(v) for k, v in arrays.items()}
    model.load_state_dict(state, strict=True)
    out = model_dir / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), metadata={"format": "pt"})
    return out


def check(model_dir: Path, images_dir: Path) -> float:
    """Largest |Δp(fake)| between ONNX Runtime fp32 and PyTorch on every image of ``images_dir``."""
    bundle = Bundle.discover(model_dir)
    onnx_engine = Engine(bundle.variants["fp32"], "cpu")
    torch_engine = TorchEngine(bundle.require_pytorch_weights("pytorch"), "pytorch", "cpu")
    positive, why = positive_index(bundle.labels())
    if positive is None:
        raise SystemExit(why)
    paths = image_files(images_dir)
    cfg = bundle.preprocess_config(onnx_engine.input.image_hw())
    worst = 0.0
    for start in range(0, len(paths), 64):
        batch = preprocess_batch([load_image(p) for p in paths[start : start + 64]], cfg)
        dp = np.abs(onnx_engine.predict_proba(batch)[:, positive] - torch_engine.predict_proba(batch)[:, positive])
        worst = max(worst, float(dp.max()))
    print(f"{len(paths)} images: max |Δp(fake)| ONNX Runtime vs PyTorch = {worst:.2e} (tolerance {TOLERANCE:g})")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "variants" / "demo")
    parser.add_argument("--images", type=Path, default=REPO / "datasets" / "demo")
    args = parser.parse_args()
    out = export(args.model_dir)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0 if check(args.model_dir, args.images) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
