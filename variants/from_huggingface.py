#!/usr/bin/env python3
"""Make a bench model folder from a Hugging Face image-classification checkpoint (Hub id or local folder).

Writes ``OUT/config.json`` (``id2label``: bench's labels), ``OUT/preprocessor_config.json`` (bench's resize and
normalisation) and ``OUT/onnx/model.onnx`` (fp32, batch axis dynamic), the layout every bench command reads;
``bench variants build --model-dir OUT`` then derives fp16/int8/q4/bnb4. Needs ``pip install -e '.[torch]'``.

It uses torch's TorchScript exporter (``dynamo=False``): torch's default exporter (``dynamo=True``) also needs
``onnxscript``, which the ``torch`` extra does not install.

Usage::

    python variants/from_huggingface.py google/vit-base-patch16-224 variants/vit-base
"""

import sys
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

if len(sys.argv) != 3:
    sys.exit("usage: python variants/from_huggingface.py CHECKPOINT OUT_DIR")
src, out = sys.argv[1], Path(sys.argv[2])  # a Hub id or a local checkpoint folder; the model folder to write
model = AutoModelForImageClassification.from_pretrained(src).eval()
model.config.save_pretrained(out)  # id2label: bench's labels
AutoImageProcessor.from_pretrained(src).save_pretrained(out)  # resize / normalisation: bench's preprocessing


class Logits(torch.nn.Module):  # pixel_values → logits only (the exporter wants tensors, not a ModelOutput)
    def __init__(self) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


size = model.config.image_size
(out / "onnx").mkdir(parents=True, exist_ok=True)
torch.onnx.export(
    Logits(),
    (torch.zeros(1, 3, size, size),),
    str(out / "onnx" / "model.onnx"),
    input_names=["pixel_values"],
    output_names=["logits"],
    opset_version=17,
    dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
    dynamo=False,  # the TorchScript exporter; torch's default (dynamo=True) also needs `pip install onnxscript`
)
