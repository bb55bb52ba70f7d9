"""Eager PyTorch behind the Engine's interface: the ``pytorch`` and ``pytorch-fp16`` variants.

A :class:`TorchEngine` loads the Hugging Face checkpoint of a model folder (``config.json`` +
``model.safetensors`` or ``pytorch_model.bin``) with ``AutoModelForImageClassification`` and answers
the same calls as :class:`bench.engine.Engine` (``run``, ``predict_proba``, ``timed_call``, ``input``,
``num_classes``, …), so the runner, the evaluator and the service measure it through the same timed
loop, sampler and preprocessing. Like the Engine it refuses to pretend: no torch, no GPU, or a
precision this device does not run is :class:`ProviderUnavailable` with the reason, never a CPU or
fp32 figure under another label. torch and transformers are imported only when an engine is opened.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.bundle import PYTORCH_VARIANTS
from bench.engine import InputSpec, ModelLoadError, ProviderUnavailable, SessionSpec, softmax
from bench.errors import InputError
from bench.faults import slow_down
from bench.providers import EP_NAMES
from bench.quiet import quiet_libraries
from bench.results import GpuRun

INSTALL_HINT = "pip install 'bench[torch]'"
_DTYPES = {"pytorch": "float32", "pytorch-fp16": "float16"}


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """transformers' reason on one line (its messages span several, with advice we do not need)."""
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TorchEngine:
    """A Hugging Face image classifier in eager PyTorch, for one variant on one provider (cpu or cuda)."""

    def __init__(
        self, model_path: str | Path, variant: str = "pytorch", provider: str = "cpu", spec: SessionSpec | None = None
    ):
        self.model_path = Path(model_path)
        self.model_dir = self.model_path.parent if self.model_path.is_file() else self.model_path
        self.variant = variant
        self.provider = provider
        self.spec = spec or SessionSpec()
        if variant not in _DTYPES:
            raise InputError(f"unknown PyTorch variant {variant!r}; choose from {', '.join(PYTORCH_VARIANTS)}")
        if provider not in EP_NAMES:
            raise InputError(f"unknown provider {provider!r}; choose from {', '.join(EP_NAMES)}")
        if provider == "tensorrt":
            raise ProviderUnavailable(
                "tensorrt: unavailable — PyTorch variants run on cpu or cuda; TensorRT runs the ONNX variants "
                "(torch-tensorrt is not supported)"
            )
        if variant == "pytorch-fp16" and provider == "cpu":
            raise ProviderUnavailable(
                "cpu: unavailable — pytorch-fp16 is half precision on CUDA; eager PyTorch has no fast fp16 "
                "kernels on CPU and bench does not report bf16 under an fp16 label (use --variant pytorch on cpu)"
            )
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ProviderUnavailable(
                f"{provider}: unavailable — PyTorch rows need torch and transformers ({exc.name or exc} is not "
                f"installed); {INSTALL_HINT}"
            ) from exc
        self._torch = torch
        self.dtype = getattr(torch, _DTYPES[variant])
        self.device = self._device(torch)
        self._set_threads(torch)

        start = time.perf_counter_ns()
        self.model = self._load(transformers)
        try:
            self.model.to(device=self.device, dtype=self.dtype)
            self._synchronize()
        except Exception as exc:  # CUDA out of memory, a driver error: the device could not take the model
            raise ModelLoadError(f"{provider}: could not move the model to {self.device}: {_one_line(exc)}") from exc
        self.session_create_ms = (time.perf_counter_ns() - start) / 1e6

        config = self.model.config
        self.labels: dict[int, str] = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        self.num_classes: int | None = len(self.labels) or getattr(config, "num_labels", None)
        self.input = InputSpec(name="pixel_values", shape=("batch_size", *self._image_shape(config)), dtype=np.float32)
        self.providers_effective: list[str] = [f"torch:{self.device}"]
        self.clock_sync = "torch.cuda.synchronize" if self.device.type == "cuda" else None
        self.versions = {"torch": torch.__version__, "transformers": transformers.__version__}

    # --- loading --------------------------------------------------------------------------------------

    def _device(self, torch: Any) -> Any:
        if self.provider == "cpu":
            return torch.device("cpu")
        if torch.version.cuda is None:
            raise ProviderUnavailable(
                f"cuda: unavailable — this torch build is CPU-only ({torch.__version__}); install a CUDA build "
                "of torch for the PyTorch rows on cuda"
            )
        if not torch.cuda.is_available():
            raise ProviderUnavailable("cuda: unavailable — torch.cuda.is_available() is False (no usable CUDA GPU)")
        device_id = self.spec.provider_options.device_id
        if device_id >= torch.cuda.device_count():
            raise ProviderUnavailable(
                f"cuda: unavailable — GPU {device_id} does not exist (torch sees {torch.cuda.device_count()})"
            )
        return torch.device("cuda", device_id)

    def _set_threads(self, torch: Any) -> None:
        """--threads maps to torch's intra-op pool, as it maps to ORT's (process-wide in torch)."""
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        if self.spec.inter_op_threads:
            with contextlib.suppress(RuntimeError):  # settable once per process, before any parallel work
                torch.set_num_interop_threads(self.spec.inter_op_threads)

    def _load(self, transformers: Any) -> Any:
        """The checkpoint as an eval-mode model; a folder transformers cannot read is an input error (exit 2)."""
        if not (self.model_dir / "config.json").is_file():
            raise InputError(f"{self.model_dir} has no config.json; PyTorch variants need the Hugging Face checkpoint")
        transformers.utils.logging.disable_progress_bar()  # its load bar would land on stderr for each cell
        try:
            with quiet_libraries():
                model, info = transformers.AutoModelForImageClassification.from_pretrained(
                    str(self.model_dir), local_files_only=True, output_loading_info=True
                )
        except Exception as exc:
            raise InputError(
                f"transformers cannot load {self.model_dir} as an image classifier: {_one_line(exc)}"
            ) from exc
        missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
        if missing:  # transformers would run with random weights there: refuse instead of measuring noise
            raise InputError(
                f"{self.model_path.name} lacks {len(missing)} weight(s) the {type(model).__name__} architecture "
                f"needs (first: {missing[0]}); the checkpoint does not match config.json"
            )
        model.eval()
        return model

    def _image_shape(self, config: Any) -> tuple[int | str, ...]:
        """(C, H, W) from the model config; H/W stay symbolic when the config does not fix them."""
        size = getattr(config, "image_size", None)
        h: int | str
        w: int | str
        if isinstance(size, int):
            h = w = size
        elif isinstance(size, (list, tuple)) and len(size) == 2:
            h, w = int(size[0]), int(size[1])
        else:
            h, w = "height", "width"
        return (int(getattr(config, "num_channels", 3) or 3), h, w)

    # --- the Engine's interface -----------------------------------------------------------------------

    @property
    def io_binding_default(self) -> bool:
        """Input resident on the device on CUDA, like the Engine's IOBinding default: the figure is the model's."""
        return self.device.type == "cuda"

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {batch_size}")

    def random_batch(self, batch_size: int, seed: int = 0) -> np.ndarray:
        """The Engine's seeded random input: same shape rule, same generator, so both backends get equal tensors."""
        self.check_batch_size(batch_size)
        dims = [batch_size] + [d if isinstance(d, int) and d > 0 else 224 for d in self.input.shape[1:]]
        return np.random.default_rng(seed).standard_normal(dims, dtype=np.float32)

    def _tensor(self, batch: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device, self.dtype)

    def _forward(self, x: Any) -> Any:
        with self._torch.inference_mode():
            return self.model(pixel_values=x).logits

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch (float32, on the host)."""
        return self._forward(self._tensor(batch)).float().cpu().numpy()

    def gpu_run(self) -> GpuRun | None:
        """What a CUDA cell ran with (the ONNX engine's counterpart): eager PyTorch, how the clock was synchronised.
        None on CPU."""
        if self.clock_sync is None:
            return None
        return {"backend": "pytorch", "clock_sync": self.clock_sync, "cuda_graph": False, "engine_build": None}

    def copy_breakdown(self, batch: np.ndarray, calls: int = 50) -> None:
        """Not measured for PyTorch cells: the timed call includes the host→device copy (io_binding off)."""
        return None

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits, in float64), as the Engine computes them."""
        return softmax(self.run(batch))

    def timed_call(self, batch: np.ndarray, io_binding: bool | None = None) -> Callable[[], Any]:
        """A zero-argument callable running one inference, for the timed loop.

        With ``io_binding`` the input is moved to the device once and the logits stay there; without it each
        call copies the batch in and the logits out. On CUDA each call ends with ``torch.cuda.synchronize``
        (``clock_sync``), so the clock is read after the kernels finished, not when they were queued.
        """
        use_binding = self.io_binding_default if io_binding is None else io_binding
        if use_binding:
            resident = self._tensor(batch)

            def call() -> Any:
                out = self._forward(resident)
                self._synchronize()
                return out

        else:
            host = np.ascontiguousarray(batch, dtype=np.float32)

            def call() -> Any:
                return self._forward(self._tensor(host)).float().cpu()  # .cpu() waits for the device

        return slow_down(call, str(self.model_path))
