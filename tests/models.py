"""Real ONNX files built in tests: a tiny ViT-shaped classifier (Conv patchify, MatMul blocks, head)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

# a ViT image processor's settings (HF preprocessor_config.json), without the size
PREPROCESSOR = {
    "do_resize": True,
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5] * 3,
    "image_std": [0.5] * 3,
}


def make_classifier(
    path: Path,
    size: int = 32,
    batch: int | str = "batch_size",
    hidden: int = 64,
    num_labels: int = 2,
    seed: int = 0,
) -> Path:
    """Write a small image classifier: Conv patch embed → MatMul MLP block → mean pool → MatMul head.

    Its MatMul weights have K divisible by 32 and 64, so 4-bit quantisers have something to quantise.
    """
    rng = np.random.default_rng(seed)
    patch = 8
    tokens = (size // patch) ** 2

    def init(name: str, *shape: int, scale: float = 0.1) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("patch_w", hidden, 3, patch, patch, scale=0.05),
        init("patch_b", hidden),
        numpy_helper.from_array(np.array([0, hidden, tokens], dtype=np.int64), "shape_tokens"),
        init("fc1_w", hidden, hidden * 2),
        init("fc1_b", hidden * 2),
        init("fc2_w", hidden * 2, hidden),
        init("head_w", hidden, num_labels, scale=0.5),
        init("head_b", num_labels),
        init("ln_scale", hidden, scale=0.0),
        init("ln_bias", hidden, scale=0.0),
    ]
    inits[-2] = numpy_helper.from_array(np.ones(hidden, dtype=np.float32), "ln_scale")
    nodes = [
        helper.make_node("Conv", ["pixel_values", "patch_w", "patch_b"], ["patches"], strides=[patch, patch]),
        helper.make_node("Reshape", ["patches", "shape_tokens"], ["tokens_t"]),
        helper.make_node("Transpose", ["tokens_t"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("LayerNormalization", ["tokens", "ln_scale", "ln_bias"], ["normed"], axis=-1),
        helper.make_node("MatMul", ["normed", "fc1_w"], ["h1"]),
        helper.make_node("Add", ["h1", "fc1_b"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["a1"]),
        helper.make_node("MatMul", ["a1", "fc2_w"], ["h2"]),
        helper.make_node("Add", ["tokens", "h2"], ["res"]),
        helper.make_node("ReduceMean", ["res"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head_w"], ["hl"]),
        helper.make_node("Add", ["hl", "head_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_vit",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, num_labels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path


def make_bundle(root: Path, size: int = 32, labels: tuple[str, ...] = ("Deepfake", "Real"), **kw: object) -> Path:
    """A transformers.js-style model folder around :func:`make_classifier`."""
    make_classifier(root / "onnx" / "model.onnx", size=size, num_labels=len(labels), **kw)  # type: ignore[arg-type]
    (root / "config.json").write_text(
        json.dumps(
            {
                "model_type": "vit",
                "id2label": {str(i): n for i, n in enumerate(labels)},
                "label2id": {n: i for i, n in enumerate(labels)},
            }
        )
    )
    (root / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR | {"size": {"height": size, "width": size}}))
    return root


def make_variants_workspace(root: Path, images_per_class: int) -> Path:
    """``root/tiny``: a bundle with three variants (fp32, wide, seed2); ``root/ds``: real/ and fake/ 40×40 PNGs."""
    bundle = make_bundle(root / "tiny")
    make_classifier(bundle / "onnx" / "model_wide.onnx", hidden=128, seed=1)
    make_classifier(bundle / "onnx" / "model_seed2.onnx", seed=2)
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        (root / "ds" / cls).mkdir(parents=True)
        for i in range(images_per_class):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype("uint8")).save(root / "ds" / cls / f"{i}.png")
    return root
