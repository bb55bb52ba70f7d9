"""What the detect service is configured with: one dataclass, each field carrying its own help."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench.bundle import PYTORCH_VARIANTS, is_pytorch_variant
from bench.errors import InputError
from bench.providers import PROVIDER_NAMES
from bench.settings import MAX_THREADS, check, setting

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
    """Configuration of :func:`bench.service.create_app`; ``bench serve``'s options are derived from these fields."""

    model_dir: Path | None = setting(
        None,
        flag="",  # the CLI's common --model-dir
        help="Model folder; None = CLI.md discovery ($BENCH_MODEL_DIR, ./variants/demo, the bundled demo).",
        role="record",
    )
    variant: str = setting(
        "fp32", flag="--variant", help="Variant to serve (built first when a recipe can).", role="record"
    )
    provider: str = setting(
        "cpu", flag="--provider", help="cpu, cuda or tensorrt.", role="record", choices=PROVIDER_NAMES
    )
    threshold: float = setting(
        0.5,
        flag="--threshold",
        help="Fake ⇔ p(fake) ≥ threshold (the evaluator's rule; 0.5 = argmax for two classes).",
        role="record",
        minimum=0,
        maximum=1,
    )
    positive_label: str | None = setting(
        None, flag="--positive-label", help="Name or index of the fake class (default: by name, CLI.md).", role="record"
    )
    max_batch: int = setting(
        16,
        flag="--max-batch",
        help="Most images per inference call; 1 turns dynamic batching off.",
        role="record",
        minimum=1,
    )
    max_delay_ms: float = setting(
        2.0,
        flag="--max-delay-ms",
        help="Longest a request waits for others to join its batch.",
        role="record",
        minimum=0,
    )
    max_queue: int = setting(
        256,
        flag="--max-queue",
        help="Images waiting at most; beyond it 503 + Retry-After.",
        role="record",
        minimum=1,
    )
    max_upload_mb: float = setting(
        10.0, flag="--max-upload-mb", help="Largest file accepted (413 above).", role="record", minimum=0, above=True
    )
    max_batch_files: int = setting(
        32, flag="--max-batch-files", help="Most files per /detect/batch request.", role="record", minimum=1
    )
    max_batch_upload_mb: float = setting(
        64.0,
        flag="--max-batch-upload-mb",
        help="Largest /detect/batch request body.",
        role="record",
        minimum=0,
        above=True,
    )
    threads: int | None = setting(
        None,
        flag="--threads",
        help="ORT intra-op threads (default: ORT's, all cores).",
        role="record",
        minimum=1,
        maximum=MAX_THREADS,
    )
    cpus: str | None = setting(
        None,
        flag="--cpus",
        help="Pin the server to these CPUs (taskset's list: 1, 0,2, 2-3; Linux), e.g. apart from a load generator "
        "on the same machine (bench load --cpus). Without --threads, ORT then runs one intra-op thread per CPU given.",
        role="record",
    )
    device_id: int = setting(
        0, flag="--device-id", help="GPU index for cuda/tensorrt.", role="record", minimum=0, maximum=1023
    )
    preprocess_workers: int = setting(
        default_factory=_default_workers,
        flag="",
        help="Threads that decode and preprocess uploads (also bounds decoded images held at once).",
        role="record",
        minimum=1,
    )
    allow_build: bool = setting(True, flag="", help="Build a missing variant from its recipe.", role="record")
    fallback: str | None = setting(
        None,
        flag="--fallback",
        help="Serve this PyTorch variant (pytorch, pytorch-fp16) when --variant cannot load; /health says which "
        "and why.",
        role="record",
    )
    retry_after_s: int = setting(
        1, flag="", help="Retry-After seconds on 503 (loading, overloaded).", role="record", minimum=0
    )
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        flag="--max-pixels",
        help="Most pixels one image may decode to (a JPEG at its reduced decode scale); 413 above.",
        role="record",
        minimum=1,
    )
    max_batch_pixels: int | None = setting(
        None,
        flag="--max-batch-pixels",
        help="Most pixels one /detect/batch may decode in all; 413 above.",
        default_text=f"{BATCH_PIXEL_FACTOR} x --max-pixels",
        role="record",
        minimum=1,
    )
    allowed_hosts: tuple[str, ...] = setting(
        LOOPBACK_HOSTS,
        flag="--allowed-hosts",
        help="Comma list of Host header values answered (*.example.com patterns, * for any); others get 400. "
        "The --host address is added.",
        role="record",
        comma_list=True,
    )
    expose_paths: bool = setting(
        False,
        flag="--expose-paths",
        is_flag=True,
        help="Show absolute model paths and the PID in /health and errors.",
        role="record",
    )
    docs: bool = setting(
        False,
        flag="--docs",
        is_flag=True,
        help="Serve /docs and /redoc (off by default: their pages load a CDN's scripts).",
        role="record",
    )
    header_timeout_s: float = setting(
        10.0,
        flag="--header-timeout",
        help="Seconds a connection has to send a complete request head, then it is closed.",
        role="record",
        minimum=0,
        above=True,
    )
    body_timeout_s: float = setting(
        10.0,
        flag="--body-timeout",
        help="Seconds a request body may pause; after that grace it must also average 16 KiB/s. Else 408 and the "
        "connection is closed.",
        role="record",
        minimum=0,
        above=True,
    )
    max_pending_upload_mb: float = setting(
        256.0,
        flag="--max-pending-upload-mb",
        help="Most request-body data all requests in flight hold together (memory and temp files); 503 above.",
        role="record",
        minimum=0,
        above=True,
    )
    keep_alive_s: int = setting(
        5,
        flag="--keep-alive",
        help="Seconds an idle keep-alive connection stays open.",
        role="record",
        minimum=1,
    )
    limit_concurrency: int = setting(
        1024,
        flag="--limit-concurrency",
        help="Most requests in flight; beyond it a JSON 503 + Retry-After (idle connections do not count, the "
        "longest-idle are closed; /health/live and /metrics are not counted).",
        role="record",
        minimum=2,
    )

    def __post_init__(self) -> None:
        check(self)
        if self.max_batch_pixels is not None and self.max_batch_pixels < self.max_pixels:
            raise InputError(
                f"--max-batch-pixels must be ≥ --max-pixels ({self.max_pixels}), got {self.max_batch_pixels}"
            )
        if not self.allowed_hosts:
            raise InputError('--allowed-hosts needs at least one name ("*" allows any)')
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
    def max_pending_upload_bytes(self) -> int:
        return int(self.max_pending_upload_mb * _MB)

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
