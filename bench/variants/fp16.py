"""Graph fixes that let onnxconverter-common's float16 conversion produce a model ORT accepts.

The converter rewrites tensor types but not every attribute that names a type; what it leaves
inconsistent is repaired here on the fp32 graph before conversion (exact: it only removes no-ops).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def drop_noop_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Casts to float32 of tensors that already are float32 (exact in the fp32 graph).

    PyTorch's attention export writes ``Softmax → Cast(to=float)``; onnxconverter-common turns the tensor
    into float16 but leaves the Cast's ``to`` at float, and ORT then refuses the fp16 model ("Type Error:
    Type (tensor(float16)) of output arg … does not match expected type").
    """
    import onnx

    graph = model.graph
    typed = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    elem.update({t.name: t.data_type for t in graph.initializer})
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if (
            node.op_type == "Cast"
            and to == onnx.TensorProto.FLOAT
            and node.output[0] not in outputs
            and elem.get(node.input[0]) == onnx.TensorProto.FLOAT
        ):
            rename[node.output[0]] = node.input[0]
            continue
        keep.append(node)
    if rename:
        del graph.node[:]
        graph.node.extend(keep)
    return model
