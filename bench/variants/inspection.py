"""Inspect variant files without running them: size, sha256, precision, quantisation ops, parameter count.

What ``bench variants list`` shows. Works on the ONNX protobuf alone (external data is not loaded), and
walks subgraphs (If/Loop/Scan bodies) too, so the figures hold for any exporter's graph layout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.bundle import Bundle, is_pytorch_variant, variant_name
from bench.errors import InputError
from bench.modelfile import model_info
from bench.variants.names import variant_order

if TYPE_CHECKING:
    import onnx

QUANT_OP_PATTERN = re.compile(
    r"^(MatMulNBits|MatMulBnb4|MatMulInteger|ConvInteger|DynamicQuantize\w*|QLinear\w*|QuantizeLinear|"
    r"DequantizeLinear|MatMulIntegerToFloat|GatherBlockQuantized|QGemm|QAttention)$"
)


@dataclass
class VariantInfo:
    """One variant file as ``bench variants list`` shows it."""

    variant: str
    file: str
    path: str
    size_mb: float
    sha256: str
    precision: str
    quant_ops: dict[str, int]
    parameters: int | None  # None: a pytorch_model.bin without torch installed to read it
    op_types: dict[str, int]
    recipe: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_variants(bundle: Bundle) -> list[VariantInfo]:
    """Every variant file in the bundle, inspected (nothing is built), then the PyTorch rows its checkpoint offers."""
    names = variant_order([*bundle.variants, *bundle.pytorch_variants])
    return [
        inspect_pytorch_weights(bundle.require_pytorch_weights(name), name)
        if is_pytorch_variant(name)
        else inspect_variant(bundle.variants[name], name)
        for name in names
    ]


_SAFETENSORS_DTYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16", "F64": "fp64", "I8": "int8", "U8": "uint8"}


def inspect_pytorch_weights(path: Path, variant: str = "pytorch") -> VariantInfo:
    """A PyTorch row: the checkpoint file's size, sha256, stored precision and parameter count.

    safetensors is read from its JSON header alone (no torch needed); pytorch_model.bin needs torch.
    """
    info = model_info(path)
    counts = _safetensors_counts(path) if path.suffix == ".safetensors" else _torch_bin_counts(path)
    stored = max(counts, key=counts.__getitem__) if counts else None
    if variant == "pytorch-fp16":
        precision = "fp16 eager PyTorch on CUDA (cast at load)"
    else:
        precision = "fp32 eager PyTorch" + (f" (stored {stored})" if stored and stored != "fp32" else "")
    if counts is None:
        precision += "; pytorch_model.bin not inspected (needs bench[torch])"
    return VariantInfo(
        variant=variant,
        file=path.name,
        path=str(path),
        size_mb=info.size_mb,
        sha256=info.sha256,
        precision=precision,
        quant_ops={},
        parameters=None if counts is None else sum(counts.values()),
        op_types={},
        recipe=None,
    )


def _safetensors_counts(path: Path) -> dict[str, int]:
    """Elements per stored dtype, from the safetensors header (8-byte little-endian length, then JSON)."""
    try:
        with path.open("rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(length))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file ({exc}); re-download it") from exc
    counts: dict[str, int] = {}
    for name, tensor in header.items():
        if name != "__metadata__":
            dtype = _SAFETENSORS_DTYPES.get(tensor["dtype"], tensor["dtype"].lower())
            counts[dtype] = counts.get(dtype, 0) + math.prod(tensor["shape"])
    return counts


def _torch_bin_counts(path: Path) -> dict[str, int] | None:
    """Elements per dtype of a pytorch_model.bin, or None when torch is not installed to read it."""
    try:
        import torch
    except ImportError:
        return None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise InputError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    counts: dict[str, int] = {}
    for tensor in state.values():
        if hasattr(tensor, "dtype"):
            dtype = names.get(tensor.dtype, str(tensor.dtype).removeprefix("torch."))
            counts[dtype] = counts.get(dtype, 0) + tensor.numel()
    return counts


def inspect_variant(path: Path, name: str | None = None) -> VariantInfo:
    """Size, sha256, precision, quantisation op types and parameter count of one .onnx file."""
    import onnx

    info = model_info(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "re-download or rebuild it (bench variants build --force)"
        ) from exc
    nodes = list(all_nodes(model.graph))
    op_types: dict[str, int] = {}
    for node in nodes:
        op_types[node.op_type] = op_types.get(node.op_type, 0) + 1
    quant_ops = {k: v for k, v in sorted(op_types.items()) if QUANT_OP_PATTERN.match(k)}
    return VariantInfo(
        variant=name or variant_name(path),
        file=path.name,
        path=str(path),
        size_mb=info.size_mb,
        sha256=info.sha256,
        precision=describe_precision(model, nodes),
        quant_ops=quant_ops,
        parameters=count_parameters(model, nodes),
        op_types=dict(sorted(op_types.items())),
        recipe=info.recipe,
    )


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from all_graphs(g)


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of the graph and of its subgraphs."""
    for g in all_graphs(graph):
        yield from g.node


def all_initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every initializer of the graph and of its subgraphs."""
    for g in all_graphs(graph):
        yield from g.initializer


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_parameters(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto] | None = None) -> int:
    """Weights the model represents: packed 4-bit weights count as K×N; scales and zero points do not count.

    Only numeric weight tensors count (float, int8/uint8, 4-bit); int64 shape constants do not. So fp32,
    fp16, int8, q4 and bnb4 of one model report the same figure.
    """
    from onnx import TensorProto

    weight_types = {
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
        TensorProto.DOUBLE,
        TensorProto.INT8,
        TensorProto.UINT8,
        TensorProto.INT4,
        TensorProto.UINT4,
    }
    inits = {t.name: t for t in all_initializers(model.graph)}
    counts = {n: math.prod(t.dims) for n, t in inits.items() if t.data_type in weight_types}
    metadata: set[str] = set()
    for node in nodes if nodes is not None else all_nodes(model.graph):
        op, ins = node.op_type, list(node.input)
        if op in ("MatMulNBits", "MatMulBnb4") and len(ins) > 1:
            k, n = _attr(node, "K"), _attr(node, "N")
            if k and n and ins[1] in counts:
                counts[ins[1]] = int(k) * int(n)
            metadata.update(ins[2:])
        elif op in ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"):
            metadata.update(ins[2:])
        elif op in ("DequantizeLinear", "QuantizeLinear"):
            metadata.update(ins[1:])
        elif op in ("QLinearMatMul", "QLinearConv"):
            metadata.update(x for i, x in enumerate(ins) if i in (1, 2, 4, 5, 6, 7))
    for name in list(counts):  # quantize_dynamic's W_scale / W_zero_point next to W_quantized
        for suffix in ("_scale", "_zero_point"):
            if name.endswith(suffix) and f"{name[: -len(suffix)]}_quantized" in inits:
                metadata.add(name)
    return int(sum(c for n, c in counts.items() if n not in metadata))


def describe_precision(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto] | None = None) -> str:
    """One phrase for how the weights are stored: ``fp32``, ``fp16 (fp32 I/O)``, ``int4 MatMulNBits block 32, sym``…"""
    import onnx
    from onnx import TensorProto

    nodes = list(nodes) if nodes is not None else list(all_nodes(model.graph))
    inits = {t.name: t for t in all_initializers(model.graph)}
    float_bytes: dict[int, int] = {}
    for t in inits.values():
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16):
            float_bytes[t.data_type] = float_bytes.get(t.data_type, 0) + math.prod(t.dims)
    dominant = max(float_bytes, key=float_bytes.__getitem__) if float_bytes else TensorProto.FLOAT
    float_names: dict[int, str] = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
    float_name = float_names[dominant]
    rest = f"rest {float_name}"
    by_op = {n.op_type: n for n in nodes}
    if "MatMulNBits" in by_op:
        node = by_op["MatMulNBits"]
        sym = "asym" if len(node.input) > 3 and node.input[3] else "sym"
        return f"int{_attr(node, 'bits', 4)} MatMulNBits, block {_attr(node, 'block_size')}, {sym}; {rest}"
    if "MatMulBnb4" in by_op:
        node = by_op["MatMulBnb4"]
        kind = {0: "fp4", 1: "nf4"}.get(_attr(node, "quant_type"), "4-bit")
        return f"{kind} MatMulBnb4, block {_attr(node, 'block_size')}; {rest}"
    integer = by_op.get("MatMulInteger") or by_op.get("ConvInteger")
    if integer is not None:
        weight = inits.get(integer.input[1]) if len(integer.input) > 1 else None
        wtype = "uint8" if weight is not None and weight.data_type == TensorProto.UINT8 else "int8"
        scale = inits.get(integer.input[1][: -len("_quantized")] + "_scale") if weight is not None else None
        granularity = "per-channel" if scale is not None and math.prod(scale.dims) > 1 else "per-tensor"
        return f"{wtype} weights, dynamic uint8 activations, {granularity}; {rest}"
    if any(op.startswith("QLinear") for op in by_op):
        return f"int8 static (QLinear ops); {rest}"
    if "DequantizeLinear" in by_op:
        dq_types = {
            inits[n.input[0]].data_type for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in inits
        }
        names = sorted(
            onnx.helper.tensor_dtype_to_np_dtype(t).name
            if t not in (TensorProto.INT4, TensorProto.UINT4)
            else ("int4" if t == TensorProto.INT4 else "uint4")
            for t in dq_types
        )
        return f"{'/'.join(names) or 'quantised'} QDQ weights; {rest}"
    io_float = {i.type.tensor_type.elem_type for i in model.graph.input}
    if float_name == "fp16" and TensorProto.FLOAT in io_float:
        return "fp16 (fp32 I/O)"
    return float_name
