"""Response shapes, for /openapi.json (handlers build plain dicts; these document them)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    error: str = Field(description="Short machine-readable code, e.g. unsupported_media_type.")
    detail: str = Field(description="One human-readable line saying what was wrong and what to do.")
    request_id: str | None = Field(description="Also sent as the X-Request-ID response header.")


class MemoryUsage(BaseModel):
    gpu_memory_percent: float | None
    gpu_memory_used_mb: float | None
    gpu_memory_total_mb: float | None


class ProcessInfo(BaseModel):
    pid: int | None = Field(description="Only with --expose-paths (null otherwise).")
    rss_mb: float


class Backend(BaseModel):
    serving: str = Field(description="onnxruntime or pytorch: the runtime answering /detect.")
    variant: str = Field(description="The variant serving (the --fallback one when the requested one failed).")
    requested_variant: str
    fallback_reason: str | None = Field(description="Why the requested variant is not serving (null when it is).")


class HealthResponse(BaseModel):
    status: str = Field(description="healthy once the model is loaded and warmed up, else unhealthy.")
    service: str
    model_loaded: bool
    gpu_available: bool
    memory_usage: MemoryUsage
    variant: str
    provider: str
    providers_effective: list[str] | None
    backend: Backend | None = Field(description="Which backend serves and why (null until a model is loaded).")
    model_state: str = Field(description="loading, ready or failed.")
    reason: str | None = Field(description="Why the model is not ready (null when it is).")
    uptime_s: float
    requests_served: int = Field(description="/detect and /detect/batch requests answered (any status).")
    process: ProcessInfo


class ItemProcessingTime(BaseModel):
    decode: float
    preprocess: float
    queue: float
    inference: float = Field(description="The whole batch's inference call this image ran in.")


class ProcessingTime(ItemProcessingTime):
    total: float


class ModelRef(BaseModel):
    variant: str
    provider: str


class DetectResponse(BaseModel):
    label: str
    is_deepfake: bool
    fake_probability: float
    threshold: float
    confidence: float = Field(description="Probability of the returned label.")
    scores: dict[str, float] = Field(description="Every class of id2label with its probability.")
    processing_time_ms: ProcessingTime
    batch_size: int = Field(description="Images in the inference call that served this request.")
    model: ModelRef
    request_id: str


class BatchItem(BaseModel):
    index: int
    filename: str | None
    ok: bool
    status: int = Field(description="200, or the status this image alone would have got (400, 413, 415).")
    label: str | None = None
    is_deepfake: bool | None = None
    fake_probability: float | None = None
    threshold: float | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    processing_time_ms: ItemProcessingTime | None = None
    error: str | None = None
    detail: str | None = None


class BatchStats(BaseModel):
    count: int
    ok: int
    failed: int
    total_ms: float
    ms_per_image: float


class BatchResponse(BaseModel):
    results: list[BatchItem]
    stats: BatchStats
    model: ModelRef
    request_id: str
