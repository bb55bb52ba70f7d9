"""FLOPs (2 × multiply-accumulates) of the matrix-multiply work in a graph, from tensor shapes alone.

Only ops with a formula below are counted; every other op type is listed as not counted (element-wise, data
movement, normalisation: memory-bound work whose "FLOPs" would be a guess). Shapes come from ONNX shape
inference of the model as written (:func:`model_flops`) or, for the graph ORT really ran, from ORT's profile
and its optimised model (bench.profile.profiler). ``None`` means "a counted op whose shapes are unknown".

Formulas (``out`` the output shape, ``prod`` the product of its dims):

- Conv, FusedConv, NhwcConv, NhwcFusedConv, ConvInteger, QLinearConv (weight ``W`` = [Cout, Cin/g, k…]):
  ``2 · prod(out) · prod(W[1:])`` — each output element is a dot product of Cin/g · kh · kw terms.
- ConvTranspose (``W`` = [Cin, Cout/g, k…]): ``2 · prod(X) · prod(W[1:])`` — each input element is scattered
  into Cout/g · kh · kw outputs.
- MatMul, FusedMatMul, MatMulInteger, QLinearMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul, Gemm, FusedGemm,
  QGemm, MatMulNBits, MatMulBnb4, MatMulFpQ4 (``A`` the first matrix input): ``2 · prod(out) · K`` with
  ``K = A[-1] · A[-2] / out[-2]`` (A's two matrix dims hold M and K in either order, so transposes need no
  attribute; for a 1-D A, ``K = A[0]``). 4-bit weights are packed, so K is read from A, never from B.
- Attention (com.microsoft; input [B, S, Hin], weights [Hin, Hq + Hk + Hv], output [B, S, Hv]):
  ``2·B·S·Hin·W[1]`` (the QKV projection) ``+ 2·B·S·S·(W[1] − Hv)/2`` (Q·Kᵀ) ``+ 2·B·S·S·Hv`` (softmax · V).
- MultiHeadAttention (query [B, S, Hq], key [B, L, Hk], value [B, L, Hv], output [B, S, Hv]):
  ``2·B·S·L·Hq + 2·B·S·L·Hv``; packed QKV (rank-5 query, no key) likewise with L = S.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Shape = Sequence[int]

CONV = {"Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "ConvInteger"}
CONV_WEIGHT_AT = {"QLinearConv": 3}  # where the weight sits among the inputs (1 for the others)
CONV_TRANSPOSE = {"ConvTranspose"}
MATMUL = {
    "MatMul",
    "FusedMatMul",
    "MatMulInteger",
    "QLinearMatMul",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "Gemm",
    "FusedGemm",
    "QGemm",
    "MatMulNBits",
    "MatMulBnb4",
    "MatMulFpQ4",
}
ATTENTION = {"Attention"}
MHA = {"MultiHeadAttention"}
COUNTED = CONV | set(CONV_WEIGHT_AT) | CONV_TRANSPOSE | MATMUL | ATTENTION | MHA


def _known(shape: Shape | None) -> bool:
    return shape is not None and len(shape) > 0 and all(isinstance(d, int) and d > 0 for d in shape)


def node_flops(op_type: str, inputs: Sequence[Shape | None], outputs: Sequence[Shape | None]) -> int | None:
    """FLOPs of one call of a node (formulas in the module docstring); None when the op is not counted or a
    shape the formula needs is unknown (see :func:`is_counted` to tell the two apart)."""
    out = outputs[0] if outputs else None
    if op_type in CONV or op_type in CONV_WEIGHT_AT:
        w_at = CONV_WEIGHT_AT.get(op_type, 1)
        w = inputs[w_at] if len(inputs) > w_at else None
        if not (_known(out) and _known(w)):
            return None
        return 2 * math.prod(out) * math.prod(w[1:])  # type: ignore[index,arg-type]
    if op_type in CONV_TRANSPOSE:
        x, w = [*inputs, None, None][:2]
        if not (_known(x) and _known(w)):
            return None
        return 2 * math.prod(x) * math.prod(w[1:])  # type: ignore[index,arg-type]
    if op_type in MATMUL:
        a = inputs[0] if inputs else None
        if not (_known(out) and _known(a)):
            return None
        assert a is not None and out is not None
        if len(a) == 1:
            k = a[0]
        else:
            m = out[-2] if len(out) >= 2 else 1
            k = a[-1] * a[-2] // m if m and (a[-1] * a[-2]) % m == 0 else a[-1]
        return 2 * math.prod(out) * k
    if op_type in ATTENTION:
        x, w = [*inputs, None, None][:2]
        if not (_known(x) and _known(w) and _known(out)) or len(x) != 3:  # type: ignore[arg-type]
            return None
        assert x is not None and w is not None and out is not None
        b, s, h_in = x
        hv = out[-1]
        hqk = (w[-1] - hv) // 2
        return 2 * b * s * h_in * w[-1] + 2 * b * s * s * hqk + 2 * b * s * s * hv
    if op_type in MHA:
        q = inputs[0] if inputs else None
        key = inputs[1] if len(inputs) > 1 else None
        if not (_known(q) and _known(out)):
            return None
        assert q is not None and out is not None
        b, s, hv = out[0], out[1], out[-1]
        if len(q) == 5 and not _known(key):  # packed QKV [B, S, N, 3, H]
            return 2 * b * s * s * q[2] * q[4] + 2 * b * s * s * hv
        if len(q) != 3 or key is None or not _known(key) or len(key) != 3:
            return None
        return 2 * b * s * key[1] * q[2] + 2 * b * s * key[1] * hv
    return None


def is_counted(op_type: str) -> bool:
    """True for the op types with a formula (the rest are listed as not counted, never guessed)."""
    return op_type in COUNTED


@dataclass
class NodeFlops:
    name: str
    op_type: str
    flops: int | None  # None: not counted, or its shapes are unknown


@dataclass
class GraphFlops:
    """FLOPs of every node of a graph at one batch size."""

    nodes: list[NodeFlops] = field(default_factory=list)

    @property
    def total_flops(self) -> int:
        return sum(n.flops or 0 for n in self.nodes)

    @property
    def not_counted(self) -> list[str]:
        """Op types with no formula (their work is not in ``total_flops``), sorted."""
        return sorted({n.op_type for n in self.nodes if not is_counted(n.op_type)})

    @property
    def unresolved(self) -> list[str]:
        """Counted nodes whose shapes could not be read: ``total_flops`` is then a lower bound."""
        return [n.name for n in self.nodes if is_counted(n.op_type) and n.flops is None]

    def as_dict(self) -> dict[str, Any]:
        return {"total_flops": self.total_flops, "not_counted": self.not_counted, "unresolved": self.unresolved}


def shape_of(value_info: Any) -> list[int] | None:
    """Dims of an ONNX ValueInfo/TensorProto type, None when any dim is symbolic or absent."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
    return dims if all(d > 0 for d in dims) else None


def fixed_inputs(model: Any, batch_size: int, default_hw: int = 224) -> None:
    """Pin the model's graph inputs to ``batch_size`` (axis 0) and ``default_hw`` for other symbolic dims, as
    bench's engine does for a random batch, so shape inference can resolve every shape."""
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.dim_value = batch_size if axis == 0 else default_hw


def graph_flops(model: Any, extra_shapes: dict[str, list[int]] | None = None) -> GraphFlops:
    """Per-node FLOPs of an (already shape-inferred) ModelProto; ``extra_shapes`` (value name → dims) adds
    shapes inference could not give, e.g. those ORT's profile recorded."""
    shapes: dict[str, list[int] | None] = {i.name: list(i.dims) for i in model.graph.initializer}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes.setdefault(vi.name, shape_of(vi))
        if shapes[vi.name] is None:
            shapes[vi.name] = shape_of(vi)
    for name, dims in (extra_shapes or {}).items():
        shapes[name] = dims
    result = GraphFlops()
    for i, node in enumerate(model.graph.node):
        ins = [shapes.get(n) if n else None for n in node.input]
        outs = [shapes.get(n) for n in node.output]
        result.nodes.append(
            NodeFlops(node.name or f"{node.op_type}_{i}", node.op_type, node_flops(node.op_type, ins, outs))
        )
    return result


def model_flops(path: str | Path, batch_size: int = 1) -> GraphFlops:
    """FLOPs of the model as written at ``batch_size``, shapes from ONNX shape inference (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fixed_inputs(model, batch_size)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)  # Shape→Reshape chains
    return graph_flops(inferred)
