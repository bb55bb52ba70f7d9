"""Prometheus metrics of one service instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

# Paths reported as themselves; anything else is "other", so scanners cannot blow up label cardinality.
ENDPOINTS = frozenset(
    {
        "/health",
        "/health/live",
        "/health/ready",
        "/detect",
        "/detect/batch",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/redoc",
    }
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class ServiceMetrics:
    """Request counts and latencies by endpoint, batch sizes, queue depth, inference time, model info."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bench_service_requests",
            "HTTP requests answered, by endpoint and status code (499: the client hung up before the answer).",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "bench_service_request_duration_seconds",
            "Time from request start to response end, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bench_service_batch_size",
            "Images per inference call (dynamic batching).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "bench_service_inference_duration_seconds",
            "Wall time of one inference call (one batch).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("bench_service_queue_depth", "Images waiting for inference.", registry=r)
        self.images = Counter(
            "bench_service_images", "Images answered, by outcome (ok or an error code).", ["outcome"], registry=r
        )
        self.ready = Gauge("bench_service_model_ready", "1 once the model is loaded and warmed up.", registry=r)
        self.model = Info("bench_service_model", "The served model.", registry=r)
        self.connections_dropped = Counter(
            "bench_service_connections_dropped",
            "Connections the server closed before a request: header_timeout (request head too slow), "
            "evicted (idle, closed to make room at --limit-concurrency), over_limit (no open files to spare).",
            ["reason"],
            registry=r,
        )
        self.refusals = Counter(
            "bench_service_refused",
            "Requests answered 503 before the app saw them: concurrency_limit (--limit-concurrency requests in "
            "flight), pending_bodies (uploads in flight hold --max-pending-upload-mb).",
            ["reason"],
            registry=r,
        )
        self.pending_body_bytes = Gauge(
            "bench_service_pending_upload_bytes",
            "Request-body bytes held by the requests in flight (bounded by --max-pending-upload-mb).",
            registry=r,
        )
        self.memory_trims = Counter(
            "bench_service_memory_trims", "Times freed heap memory was handed back to the OS after a burst.", registry=r
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds, … (Linux /proc; absent elsewhere)
        ProcessCollector(registry=r)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def connection_dropped(self, reason: str) -> None:
        self.connections_dropped.labels(reason).inc()

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = endpoint_label(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
