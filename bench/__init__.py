"""bench: benchmark and evaluate ONNX image-classifier variants across execution providers."""

from __future__ import annotations

__version__ = "0.1.0"
