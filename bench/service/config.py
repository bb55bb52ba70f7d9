"""What the detect service is configured with: one dataclass, each field carrying its own help."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.errors import InputError

_MB = 1024 * 1024
# Room for multipart boundaries and part headers around one file, so a file of exactly
# max_upload_mb is not refused by the body limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


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
    retry_after_s: int = field(default=1, metadata={"help": "Retry-After seconds on 503 (loading, overloaded)."})

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
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

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
        return out
