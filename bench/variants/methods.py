"""The four build methods a recipe can name, each a call into the tool that does the work.

``fp16`` → onnxconverter-common's float16 conversion; ``dynamic`` → ORT's ``quantize_dynamic``;
``nbits`` → ORT's MatMulNBits quantiser; ``bnb4`` → ORT's MatMulBnb4 quantiser. Also what each must
produce (:data:`TARGET_OPS`), so a build that quantised nothing is reported instead of kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import InputError
from bench.variants.fp16 import drop_noop_casts
from bench.variants.inspection import all_initializers, all_nodes
from bench.variants.recipes import Recipe

if TYPE_CHECKING:
    import onnx

TARGET_OPS = {  # what a method must produce; none of them → nothing was quantised
    "fp16": None,
    "dynamic": ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"),
    "nbits": ("MatMulNBits",),
    "bnb4": ("MatMulBnb4",),
}


def run_method(recipe: Recipe, model: onnx.ModelProto, out: Path) -> onnx.ModelProto:
    """Run the recipe's tool on ``model`` (consumed), write the result to ``out``, return the ModelProto."""
    import onnx

    p = recipe.params
    if recipe.method == "fp16":
        from onnxconverter_common.float16 import convert_float_to_float16

        kwargs: dict[str, Any] = {
            "keep_io_types": p["keep_io_types"],
            "node_block_list": p["node_block_list"],
            "min_positive_val": p["min_positive_val"],
            "max_finite_val": p["max_finite_val"],
        }
        if p["op_block_list"] is not None:
            kwargs["op_block_list"] = p["op_block_list"]
        produced = convert_float_to_float16(drop_noop_casts(model), **kwargs)
        onnx.save_model(produced, str(out))
        return produced
    if recipe.method == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            model,
            str(out),
            op_types_to_quantize=p["op_types_to_quantize"],
            per_channel=p["per_channel"],
            reduce_range=p["reduce_range"],
            weight_type=getattr(QuantType, p["weight_type"]),
            nodes_to_exclude=p["nodes_to_exclude"],
            extra_options=p["extra_options"] or None,
        )
        return onnx.load(str(out), load_external_data=False)
    if recipe.method == "nbits":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            model,
            bits=p["bits"],
            block_size=p["block_size"],
            is_symmetric=p["is_symmetric"],
            accuracy_level=p["accuracy_level"],
            nodes_to_exclude=p["nodes_to_exclude"],
        )
        quantizer.process()
        produced = quantizer.model.model
        onnx.save_model(produced, str(out))
        return produced
    if recipe.method == "bnb4":
        from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

        quant_type = MatMulBnb4Quantizer.NF4 if p["quant_type"] == "nf4" else MatMulBnb4Quantizer.FP4
        quantizer = MatMulBnb4Quantizer(
            model, quant_type=quant_type, block_size=p["block_size"], nodes_to_exclude=p["nodes_to_exclude"]
        )
        quantizer.process()
        produced = quantizer.model.model
        onnx.save_model(produced, str(out))  # one file, like the released models (no .data)
        return produced
    raise InputError(f"recipe {recipe.name}: unknown method {recipe.method!r}")  # pragma: no cover


def has_quantisable_matmul(model: onnx.ModelProto) -> bool:
    """A MatMul whose B input is a constant 2-D initializer (what both 4-bit quantisers need)."""
    inits = {t.name: t for t in all_initializers(model.graph)}
    return any(
        n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
        for n in all_nodes(model.graph)
    )
