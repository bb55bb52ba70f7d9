"""cpu / cuda / tensorrt → ONNX Runtime provider lists with their options.

A provider is added here and nowhere else. Whether it really ran is decided by the engine, which reads
``session.get_providers()`` back after creating the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import InputError

EP_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
PROVIDER_NAMES = tuple(EP_NAMES)


@dataclass(frozen=True)
class ProviderOptions:
    """Provider-specific options: the GPU to use and TensorRT's precision and engine cache."""

    device_id: int = 0
    trt_fp16: bool = True
    trt_cache_dir: Path | None = None


def parse_providers(text: str) -> list[str]:
    """``"cpu,cuda"`` → ``["cpu", "cuda"]``; an unknown name is a usage error listing the known ones."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names:
        raise InputError(f"no provider given; choose from {', '.join(PROVIDER_NAMES)}")
    for name in names:
        if name not in EP_NAMES:
            raise InputError(f"unknown provider {name!r}; choose from {', '.join(PROVIDER_NAMES)}")
    return list(dict.fromkeys(names))


def is_gpu(provider: str) -> bool:
    return provider in ("cuda", "tensorrt")


def provider_chain(provider: str, options: ProviderOptions) -> list[tuple[str, dict[str, Any]]]:
    """The ORT ``providers=`` list for ``provider``: the requested EP first, then its fallbacks."""
    cuda = ("CUDAExecutionProvider", {"device_id": options.device_id})
    cpu = ("CPUExecutionProvider", {})
    if provider == "cpu":
        return [cpu]
    if provider == "cuda":
        return [cuda, cpu]
    if provider == "tensorrt":
        trt: dict[str, Any] = {"device_id": options.device_id, "trt_fp16_enable": options.trt_fp16}
        if options.trt_cache_dir is not None:
            Path(options.trt_cache_dir).mkdir(parents=True, exist_ok=True)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(options.trt_cache_dir))
        return [("TensorrtExecutionProvider", trt), cuda, cpu]
    raise InputError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDER_NAMES)}")


def compiled_in(provider: str) -> tuple[bool, str | None]:
    """Whether the installed ORT build has ``provider`` at all (says nothing about drivers)."""
    import onnxruntime as ort

    if EP_NAMES[provider] in ort.get_available_providers():
        return True, None
    return False, f"{EP_NAMES[provider]} is not in this onnxruntime build ({ort.__version__}); install onnxruntime-gpu"
