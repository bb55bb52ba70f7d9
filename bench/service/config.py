"""What the detect service is configured with: one dataclass, each field carrying its own help."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.bundle import PYTORCH_VARIANTS, is_pytorch_variant
from bench.errors import InputError
from bench.providers import PROVIDER_NAMES

_MB = 1024 * 1024
# Room for multipart boundaries and part headers around one file, so a file of exactly
# max_upload_mb is not refused by the body limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Most pixels one upload may decode to (after JPEG's reduced-scale decode). Measured with
# tests/benchmarks/service_hostile.py --sweep: the costliest format per pixel, a flat lossless WebP
# (Pillow's WebP decoder holds about 15 bytes per pixel), peaks at about 250 MB over baseline and 0.2 s of
# CPU at 4096x4096, and at 370 MB at 4900x4900; the ceiling is 300 MB and 1 s per upload.
DEFAULT_MAX_PIXELS = 4096 * 4096
# A batch may decode what 4 images at the limit would: about 1 s of CPU in the worst format.
BATCH_PIXEL_FACTOR = 4
# Host header values answered by default: loopback names only, so a web page that rebinds its own DNS name
# to 127.0.0.1 cannot read the service from a browser. --allowed-hosts adds others ("*" = any).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class ServiceConfig:
    """Configuration of :func:`bench.service.create_app` (``bench serve`` flags map onto these fields)."""

    model_dir: Path | None = field(
        default=None,
        metadata={
            "help": "Model folder; None = CLI.md discovery ($BENCH_MODEL_DIR, ./variants/demo, the bundled demo)."
        },
    )
    variant: str = field(default="fp32", metadata={"help": "Variant served (built first when a recipe can)."})
    provider: str = field(default="cpu", metadata={"help": "cpu, cuda or tensorrt."})
    threshold: float = field(
        default=0.5,
        metadata={"help": "Decision rule p(fake) ≥ threshold, the evaluator's (0.5 = argmax for two classes)."},
    )
    positive_label: str | None = field(
        default=None,
        metadata={"help": "Name or index of the fake class; default: the id2label entry named fake/deepfake/…"},
    )
    max_batch: int = field(
        default=16, metadata={"help": "Most images in one inference call; 1 turns dynamic batching off."}
    )
    max_delay_ms: float = field(
        default=2.0, metadata={"help": "Longest a request waits in the queue for others to join its batch."}
    )
    max_queue: int = field(
        default=256,
        metadata={"help": "Images waiting for inference at most; beyond it requests get 503 + Retry-After."},
    )
    max_upload_mb: float = field(default=10.0, metadata={"help": "Largest file accepted (413 above)."})
    max_batch_files: int = field(default=32, metadata={"help": "Most files in one /detect/batch request."})
    max_batch_upload_mb: float = field(
        default=64.0, metadata={"help": "Largest /detect/batch request body (every file together)."}
    )
    threads: int | None = field(
        default=None, metadata={"help": "ONNX Runtime intra-op threads; None = ORT's default (all physical cores)."}
    )
    device_id: int = field(default=0, metadata={"help": "GPU index for cuda/tensorrt."})
    preprocess_workers: int = field(
        default_factory=_default_workers,
        metadata={"help": "Threads that decode and preprocess uploads (also bounds decoded images held at once)."},
    )
    allow_build: bool = field(default=True, metadata={"help": "Build a missing variant from its recipe."})
    fallback: str | None = field(
        default=None,
        metadata={
            "help": "PyTorch variant served when the chosen variant cannot load (pytorch, pytorch-fp16); "
            "/health and /metrics say which backend serves and why."
        },
    )
    retry_after_s: int = field(default=1, metadata={"help": "Retry-After seconds on 503 (loading, overloaded)."})
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={"help": "Most pixels one image may decode to (JPEG: at its reduced decode scale); 413 above."},
    )
    max_batch_pixels: int | None = field(
        default=None,
        metadata={
            "help": f"Most pixels one /detect/batch may decode in all; None = {BATCH_PIXEL_FACTOR} x max_pixels."
        },
    )
    allowed_hosts: tuple[str, ...] = field(
        default=LOOPBACK_HOSTS,
        metadata={"help": "Host header values answered (starlette TrustedHostMiddleware patterns); others get 400."},
    )
    expose_paths: bool = field(
        default=False,
        metadata={"help": "Show absolute model paths and the PID in /health and error details (operators only)."},
    )
    docs: bool = field(default=False, metadata={"help": "Serve /docs and /redoc (their pages load assets from a CDN)."})
    header_timeout_s: float = field(
        default=10.0,
        metadata={"help": "Seconds a connection has to send a complete request head; then it is closed."},
    )
    keep_alive_s: int = field(
        default=5, metadata={"help": "Seconds an idle keep-alive connection stays open (uvicorn timeout_keep_alive)."}
    )
    limit_concurrency: int = field(
        default=1024,
        metadata={
            "help": "Most requests in flight; beyond it uvicorn answers 503. Idle connections do not count; past "
            "this many connections the longest-idle one is closed for a new one. Capped by the open-file limit."
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"--threshold must be within [0, 1], got {self.threshold}")
        checks = [
            (self.max_batch >= 1, f"--max-batch must be ≥ 1, got {self.max_batch}"),
            (self.max_delay_ms >= 0, f"--max-delay-ms must be ≥ 0, got {self.max_delay_ms}"),
            (self.max_queue >= 1, f"--max-queue must be ≥ 1, got {self.max_queue}"),
            (self.max_upload_mb > 0, f"--max-upload-mb must be > 0, got {self.max_upload_mb}"),
            (self.max_batch_files >= 1, f"--max-batch-files must be ≥ 1, got {self.max_batch_files}"),
            (self.max_batch_upload_mb > 0, f"--max-batch-upload-mb must be > 0, got {self.max_batch_upload_mb}"),
            (self.threads is None or self.threads >= 1, f"--threads must be ≥ 1, got {self.threads}"),
            (self.preprocess_workers >= 1, f"preprocess_workers must be ≥ 1, got {self.preprocess_workers}"),
            (self.retry_after_s >= 0, f"retry_after_s must be ≥ 0, got {self.retry_after_s}"),
            (
                self.provider in PROVIDER_NAMES,
                f"unknown provider {self.provider!r}; choose from {', '.join(PROVIDER_NAMES)}",
            ),
            (self.max_pixels >= 1, f"--max-pixels must be ≥ 1, got {self.max_pixels}"),
            (
                self.max_batch_pixels is None or self.max_batch_pixels >= self.max_pixels,
                f"--max-batch-pixels must be ≥ --max-pixels ({self.max_pixels}), got {self.max_batch_pixels}",
            ),
            (bool(self.allowed_hosts), '--allowed-hosts needs at least one name ("*" allows any)'),
            (self.header_timeout_s > 0, f"--header-timeout must be > 0, got {self.header_timeout_s}"),
            (self.keep_alive_s >= 1, f"--keep-alive must be ≥ 1 s, got {self.keep_alive_s}"),
            (self.limit_concurrency >= 2, f"--limit-concurrency must be ≥ 2, got {self.limit_concurrency}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        for pattern in self.allowed_hosts:
            if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*" and not pattern.startswith("*.")):
                raise InputError(f"--allowed-hosts {pattern!r}: a wildcard must look like *.example.com (or be *)")
        if self.fallback is not None and not is_pytorch_variant(self.fallback):
            raise InputError(
                f"--fallback {self.fallback!r} is not a PyTorch variant; choose {' or '.join(PYTORCH_VARIANTS)}"
            )

    @property
    def batch_pixels(self) -> int:
        """Most pixels one /detect/batch request may decode in all."""
        return self.max_batch_pixels if self.max_batch_pixels is not None else BATCH_PIXEL_FACTOR * self.max_pixels

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * _MB)

    @property
    def max_batch_upload_bytes(self) -> int:
        return int(self.max_batch_upload_mb * _MB)

    def body_limit(self, path: str) -> int | None:
        """Most request-body bytes accepted on ``path`` (None: no upload endpoint, no body expected)."""
        if path == "/detect":
            return self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
        if path == "/detect/batch":
            return self.max_batch_upload_bytes + MULTIPART_OVERHEAD_BYTES
        return 64 * 1024

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["model_dir"] = None if self.model_dir is None else str(self.model_dir)
        out["allowed_hosts"] = list(self.allowed_hosts)
        return out
