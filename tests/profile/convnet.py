"""A conv net of known cost, built in the test: its FLOPs are counted by hand (``analytic_flops``) to check
bench.profile's count from shapes, and a twin with wider channels costs about +25 %."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (out channels, kernel, stride) per conv layer; padding keeps H×W for stride 1
LAYERS = ((32, 3, 2), (64, 3, 1), (64, 3, 1), (64, 3, 1))


def layer_plan(channels: tuple[int, ...], size: int) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, k, stride, out_hw) per conv."""
    plan, cin, hw = [], 3, size
    for cout, (_, k, stride) in zip(channels, LAYERS, strict=True):
        hw = (hw + 2 * (k // 2) - k) // stride + 1
        plan.append((cin, cout, k, stride, hw))
        cin = cout
    return plan


def analytic_flops(batch: int, size: int, channels: tuple[int, ...], classes: int = 2) -> int:
    """2 × MACs by hand: each conv output element is cin·k·k MACs; the head is a [cout × classes] MatMul."""
    plan = layer_plan(channels, size)
    conv = sum(2 * batch * cout * hw * hw * cin * k * k for cin, cout, k, _, hw in plan)
    return conv + 2 * batch * plan[-1][1] * classes


def make_convnet(path: Path, size: int = 64, channels: tuple[int, ...] = (32, 64, 64, 64), seed: int = 0) -> Path:
    """Conv+Relu stack → global average pool → MatMul head; a dynamic batch axis."""
    rng = np.random.default_rng(seed)
    inits, nodes, x = [], [], "pixel_values"
    for i, (cin, cout, k, stride, _) in enumerate(layer_plan(channels, size)):
        w = (rng.standard_normal((cout, cin, k, k)) * (2 / (cin * k * k)) ** 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[pad] * 4, strides=[stride] * 2, name=f"conv{i}"
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat"))
    inits.append(numpy_helper.from_array((rng.standard_normal((channels[-1], 2)) * 0.1).astype(np.float32), "head"))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Reshape", ["gap", "flat"], ["pooled"], name="flatten"),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path
