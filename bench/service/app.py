"""The reference detect service: FastAPI app factory and its endpoints (paths and status codes: CLI.md).

The model loads in the background after the server starts listening, so liveness answers at once and
readiness (and /detect) answer 503 with the reason until the session exists and a warm-up inference
succeeded; a model that fails to load leaves the server up, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse as _JSONResponse
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from bench import __version__, gpu
from bench.service import schemas
from bench.service.batcher import DynamicBatcher, QueueFull
from bench.service.config import ServiceConfig
from bench.service.decoding import (
    DecodePool,
    Prepared,
    decode_upload,
    plan_uploads,
    read_upload,
    return_freed_memory_to_os,
    trim_memory,
)
from bench.service.metrics import ServiceMetrics
from bench.service.middleware import ServiceMiddleware, error_body, json_bytes
from bench.service.model import LoadedModel, ModelNotLoaded, decide, load_model

SERVICE_NAME = "Deepfake Detection"
# Costly decodes (bench.service.decoding) admitted but not finished: at most this many requests' worth of
# --max-batch-pixels; beyond it 503 + Retry-After.
QUEUED_PIXEL_FACTOR = 2
# Idle this long after a burst, freed heap memory goes back to the OS (malloc_trim).
TRIM_AFTER_IDLE_S = 1.0
_MB = 1024 * 1024
T = TypeVar("T")
_ERROR_TEXTS = {
    400: "Host header not allowed (--allowed-hosts); on uploads also: undecodable or truncated image (data "
    "shorter than its header claims), empty batch, malformed multipart body.",
    413: "Body over the upload limit, image over the decode budget (--max-pixels, --max-batch-pixels), too many files.",
    415: "Not an image type we accept (JPEG, PNG, WebP, GIF, BMP, TIFF; not run-length coded BMP, not an aspect "
    "ratio over 64:1).",
    422: "Missing multipart field, or more than one `file` part.",
    500: "Unexpected server error; the detail names the request id the server log has the details under.",
    408: "Request body stalled (--body-timeout); the connection is closed.",
    503: "Model not ready (loading or failed to load), queue full, too many requests in flight "
    "(--limit-concurrency), uploads in flight over --max-pending-upload-mb, or shutting down; see Retry-After.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": schemas.ErrorResponse, "description": _ERROR_TEXTS[code]} for code in codes}


_UPLOAD_ERRORS = _responses(400, 408, 413, 415, 422, 500, 503)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"():;,/]+/)*([^\s'\"():;,/]*)")
_FILENAME_MAX = 255


class JSONResponse(_JSONResponse):
    """Starlette's JSONResponse with <, > and & escaped, so echoed file names are never markup."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def redact_paths(text: str | None) -> str | None:
    """Absolute paths shortened to their last part (``/home/me/models/m`` → ``…/m``), for clients' eyes."""
    return None if text is None else _ABSOLUTE_PATH.sub(lambda m: f"…/{m.group(1)}", text)


class ApiError(Exception):
    """An error answer: status, short code, one-line detail, optional headers."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


class DetectService:
    """State of one running service: model lifecycle, executors, batcher, counters."""

    def __init__(self, config: ServiceConfig, on_state: Callable[[DetectService], None] | None = None):
        self.config = config
        self.on_state = on_state
        self.metrics = ServiceMetrics()
        self.model: LoadedModel | None = None
        self.state = "loading"
        self.reason: str | None = "model is loading"
        self.started = time.monotonic()
        self.requests_served = 0
        self._served_lock = threading.Lock()
        self.gpu: Any = None
        self.gpu_reason: str | None = None
        self.batcher: DynamicBatcher | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self.decode_pool: DecodePool | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._decoding = 0  # uploads admitted but not yet queued for inference
        self._trim: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.gpu, self.gpu_reason = gpu.probe(self.config.device_id)
        return_freed_memory_to_os()
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="bench-infer")
        self.decode_pool = DecodePool(
            self.config.preprocess_workers, max_queued_pixels=QUEUED_PIXEL_FACTOR * self.config.batch_pixels
        )
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="bench-load-model")

    async def _load(self) -> None:
        try:
            model = await _in_daemon_thread(load_model, self.config)
        except ModelNotLoaded as exc:
            self.state, self.reason = "failed", str(exc)
        except Exception as exc:  # never let a load bug take the server down
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            pool = self._infer_pool
            if pool is None:  # stopped while the model loaded: nothing left to serve with
                return
            self.model = model
            self.batcher = DynamicBatcher(
                model.infer,
                pool,
                max_batch=model.max_batch,
                max_delay_s=self.config.max_delay_ms / 1000,
                max_queue=self.config.max_queue,
                on_batch=self.metrics.observe_batch,
                on_depth=self.metrics.queue_depth.set,
            )
            self.batcher.start()
            self.metrics.model.info(
                {
                    "variant": model.variant,
                    "provider": model.provider,
                    "backend": model.backend,
                    "fallback_reason": model.fallback_reason or "",
                    "file": model.model_path.name,
                    "providers_effective": ",".join(model.providers_effective),
                    "positive_label": model.positive_label,
                    "threshold": str(self.config.threshold),
                    "max_batch": str(model.max_batch),
                    "version": __version__,
                }
            )
            self.metrics.ready.set(1)
            self.state, self.reason = "ready", None
        if self.on_state is not None:
            self.on_state(self)

    def on_idle(self) -> None:
        """No request in flight: hand freed memory back to the OS once it stays so for TRIM_AFTER_IDLE_S."""
        if self._trim is not None:
            self._trim.cancel()
        loop = asyncio.get_running_loop()
        self._trim = loop.call_later(TRIM_AFTER_IDLE_S, lambda: loop.run_in_executor(None, self._trim_now))

    def _trim_now(self) -> None:
        if trim_memory():
            self.metrics.memory_trims.inc()

    async def stop(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.batcher is not None:
            await self.batcher.stop()
        if self.decode_pool is not None:
            self.decode_pool.shutdown()
        if self._infer_pool is not None:
            self._infer_pool.shutdown(wait=False, cancel_futures=True)

    def count_served(self, path: str, status: int) -> None:
        if path in ("/detect", "/detect/batch"):
            with self._served_lock:
                self.requests_served += 1

    # --- request helpers ---------------------------------------------------------------------------

    def require_ready(self) -> LoadedModel:
        if self.state == "ready" and self.model is not None and self.batcher is not None:
            return self.model
        retry = self.config.retry_after_s if self.state == "loading" else max(30, self.config.retry_after_s)
        what = "model is still loading" if self.state == "loading" else f"model failed to load: {self.reason}"
        raise ApiError(503, "not_ready", self.public(what) or what, {"Retry-After": str(retry)})

    def public(self, text: str | None) -> str | None:
        """``text`` as clients may see it: absolute paths shortened unless --expose-paths."""
        return text if self.config.expose_paths else redact_paths(text)

    async def prepare(self, parts: list[Any], model: LoadedModel, request_id: str | None) -> list[Prepared]:
        """Plan each upload from its header, hold the request to its pixel budget, then decode and preprocess.

        Off the event loop, on the decode pool: headers first (one worker, nothing decoded), then the
        decodes, at most ``DecodePool.per_request`` at a time. Text parts and oversized files are answered
        per item (415, 413); a batch over --max-batch-pixels is refused whole (413) before any decoding.
        """
        config = self.config
        pool = self.decode_pool
        assert pool is not None
        # Admission control: uploads waiting to be decoded count against --max-queue too, so overload is
        # answered with 503 at once instead of piling up, unbounded, in front of the inference queue.
        waiting = self._decoding + (self.batcher.depth if self.batcher is not None else 0)
        if waiting >= config.max_queue:
            raise ApiError(
                503,
                "overloaded",
                f"queue is full ({waiting} images decoding or waiting, --max-queue {config.max_queue}); retry later",
                {"Retry-After": str(config.retry_after_s)},
            )
        prepared: list[Prepared] = [_refusal(part, config.max_upload_bytes) or Prepared(None) for part in parts]
        todo = [i for i, p in enumerate(prepared) if p.error is None]
        self._decoding += len(parts)
        try:
            plans = await pool.run(plan_uploads, [parts[i].file for i in todo], model.preprocess, config.max_pixels)
            for i, plan in zip(todo, plans, strict=True):
                prepared[i] = plan
            todo = [i for i in todo if prepared[i].plan is not None]
            pixels = sum(d.decode_pixels for i in todo if (d := prepared[i].plan) is not None)
            if pixels > config.batch_pixels:  # never for one image: max_pixels ≤ batch_pixels
                raise ApiError(
                    413,
                    "batch_too_large",
                    f"the images of this batch decode to {pixels:,} pixels in all, over the limit of "
                    f"{config.batch_pixels:,} (--max-batch-pixels); send fewer or smaller images per request",
                )
            costs = {i: prepared[i].cost_pixels for i in todo}
            with pool.admit(sum(costs.values())) as admitted:
                if not admitted:
                    raise ApiError(
                        503,
                        "overloaded",
                        f"decodes queued already cost {pool.queued_pixels:,} pixels, the most this server queues "
                        f"({QUEUED_PIXEL_FACTOR} x --max-batch-pixels); retry later",
                        {"Retry-After": str(config.retry_after_s)},
                    )
                decoded = await pool.map(
                    [functools.partial(self._decode, parts[i], model, request_id, costs[i]) for i in todo]
                )
            for i, result in zip(todo, decoded, strict=True):
                prepared[i] = result
            return prepared
        finally:
            self._decoding -= len(parts)

    async def _decode(self, part: UploadFile, model: LoadedModel, request_id: str | None, cost: int) -> Prepared:
        assert self.decode_pool is not None
        return await self.decode_pool.run(
            lambda: decode_upload(read_upload(part.file), model.preprocess, self.config.max_pixels, request_id),
            cost=cost,
        )

    def submit(self, tensors: list[np.ndarray]) -> list[asyncio.Future[Any]]:
        assert self.batcher is not None
        try:
            return self.batcher.submit_many(tensors)
        except QueueFull as exc:
            raise ApiError(503, "overloaded", str(exc), {"Retry-After": str(self.config.retry_after_s)}) from exc

    def health(self) -> tuple[int, dict[str, Any]]:
        import psutil

        used = total = None
        if self.gpu is not None:
            with contextlib.suppress(Exception):
                used, total = self.gpu.memory()
        model = self.model
        body = {
            "status": "healthy" if self.state == "ready" else "unhealthy",
            "service": SERVICE_NAME,
            "model_loaded": self.state == "ready",
            "gpu_available": self.gpu is not None,
            "memory_usage": {
                "gpu_memory_percent": round(used / total * 100, 1) if used is not None and total else None,
                "gpu_memory_used_mb": None if used is None else round(used, 1),
                "gpu_memory_total_mb": None if total is None else round(total, 1),
            },
            "gpu_reason": self.gpu_reason,
            "variant": model.variant if model else self.config.variant,
            "backend": None
            if model is None
            else {
                "serving": model.backend,
                "variant": model.variant,
                "requested_variant": self.config.variant,
                "fallback_reason": self.public(model.fallback_reason),
            },
            "provider": self.config.provider,
            "providers_effective": model.providers_effective if model else None,
            "model_state": self.state,
            "reason": self.public(self.reason),
            "model": None
            if model is None
            else {
                "file": str(model.model_path) if self.config.expose_paths else model.model_path.name,
                "labels": {str(k): v for k, v in model.labels.items()},
                "positive_label": model.positive_label,
                "threshold": self.config.threshold,
                "input": [model.preprocess.height, model.preprocess.width],
                "load_ms": round(model.load_ms, 1),
                "warmup_ms": round(model.warmup_ms, 1),
            },
            "batching": {
                "max_batch": model.max_batch if model else self.config.max_batch,
                "max_delay_ms": self.config.max_delay_ms,
                "max_queue": self.config.max_queue,
                "queue_depth": self.batcher.depth if self.batcher else 0,
            },
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests_served": self.requests_served,
            "process": {
                "pid": os.getpid() if self.config.expose_paths else None,
                "rss_mb": round(psutil.Process().memory_info().rss / _MB, 1),
            },
            "version": __version__,
        }
        return (200 if self.state == "ready" else 503), body


async def _in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a daemon thread: SIGTERM during a long model load must not wait for it to finish.

    (An executor's threads are joined at interpreter exit; a daemon thread is simply left behind.)
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            outcome = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=target, name="bench-load-model", daemon=True).start()
    return await future


def _refusal(part: Any, max_upload_bytes: int) -> Prepared | None:
    """The per-item answer for a part that is not worth reading: a text field (415) or a file over the limit."""
    if not isinstance(part, UploadFile):
        return Prepared.failed(
            415, "unsupported_media_type", "a text field, not a file upload; send images as multipart files"
        )
    if part.size is not None and part.size > max_upload_bytes:
        return Prepared.failed(
            413,
            "payload_too_large",
            f"file of {part.size:,} bytes exceeds the limit of {max_upload_bytes:,} bytes (--max-upload-mb)",
        )
    return None


_DETECT_MAX_PARTS = 4  # file parts /detect parses before it stops reading (it needs one)


def _multiple_files(count: int | str) -> str:
    return (
        f"{count} parts named 'file'; /detect classifies exactly one image: send one, "
        "or send several to /detect/batch as field 'files'"
    )


async def _read_form(request: Request, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=max_files + 32)
    except HTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            if request.url.path == "/detect":
                raise ApiError(422, "multiple_files", _multiple_files(f"more than {max_files}")) from exc
            raise ApiError(413, "too_many_files", f"more than {max_files} files in one request") from exc
        raise ApiError(400, "bad_request", f"malformed multipart body: {detail}") from exc


def _ms(value: float) -> float:
    return round(value, 3)


def _model_ref(model: LoadedModel) -> dict[str, str]:
    return {"variant": model.variant, "provider": model.provider}


def create_app(config: ServiceConfig | None = None, on_state: Callable[[DetectService], None] | None = None) -> FastAPI:
    """The detect service for ``config``; ``on_state`` is called once the model is ready or failed to load."""
    config = config or ServiceConfig()
    service = DetectService(config, on_state=on_state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title=f"bench · {SERVICE_NAME}",
        version=__version__,
        lifespan=lifespan,
        description="Reference detect service of bench: the system under test of `bench load`.",
        default_response_class=JSONResponse,
        docs_url="/docs" if config.docs else None,  # Swagger UI and ReDoc load their assets from a CDN
        redoc_url="/redoc" if config.docs else None,
    )
    app.state.service = service
    app.add_middleware(
        ServiceMiddleware,
        body_limit=config.body_limit,
        metrics=service.metrics,
        on_done=service.count_served,
        allowed_hosts=config.allowed_hosts,
        limit_concurrency=config.limit_concurrency,
        retry_after_s=config.retry_after_s,
        body_timeout_s=config.body_timeout_s,
        max_pending_body=config.max_pending_upload_bytes,
        on_idle=service.on_idle,
    )

    def rid(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.error, exc.detail, rid(request)), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(
            error_body(code, str(exc.detail), rid(request)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("missing_field", str(exc.errors()), rid(request)), status_code=422)

    # Unexpected exceptions have no handler here: ServiceMiddleware answers them with a generic 500 and logs
    # the details under the request id.

    @app.get(
        "/health",
        response_model=None,
        responses={
            200: {"model": schemas.HealthResponse},
            503: {"model": schemas.HealthResponse},
            **_responses(400),
        },
    )
    async def health() -> JSONResponse:
        """Service, model and memory state (the seed report's shape plus extras); 503 while not ready."""
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/health/live", responses=_responses(400))
    async def live() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/health/ready", response_model=None, responses=_responses(400, 503))
    async def ready(request: Request) -> JSONResponse:
        """Readiness: 200 once the model session exists and a warm-up inference succeeded."""
        model = service.require_ready()
        return JSONResponse({"status": "ready", "model": _model_ref(model), "request_id": rid(request)})

    upload_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    }
    batch_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "minItems": 1,
                                "maxItems": config.max_batch_files,
                            }
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/detect",
        response_model=None,
        openapi_extra=upload_doc,
        responses={200: {"model": schemas.DetectResponse}, **_UPLOAD_ERRORS},
    )
    async def detect(request: Request) -> JSONResponse:
        """Classify one image (multipart field `file`); concurrent requests share inference batches."""
        model = service.require_ready()
        assert service.batcher is not None
        form = await _read_form(request, max_files=_DETECT_MAX_PARTS)
        # announced only once the upload is in: a batch waits for a request being decoded (busy CPU),
        # never for a client still sending (an idle server)
        with service.batcher.incoming():
            try:
                uploads = form.getlist("file")
                if len(uploads) > 1:
                    raise ApiError(422, "multiple_files", _multiple_files(len(uploads)))
                upload = uploads[0] if uploads else None
                if not isinstance(upload, UploadFile):
                    got = "" if upload is None else "; got a text field, not a file"
                    raise ApiError(
                        422,
                        "missing_field",
                        f"multipart file field 'file' is required (curl -F file=@image.jpg URL/detect){got}",
                    )
                (prepared,) = await service.prepare([upload], model, rid(request))
            finally:
                await form.close()
            if prepared.tensor is None:
                service.metrics.images.labels(prepared.error or "error").inc()
                raise ApiError(prepared.status, prepared.error or "bad_image", prepared.detail or "")
            future = service.submit([prepared.tensor])[0]
        outcome = await future
        body = decide(outcome.probs, model.labels, model.positive, config.threshold)
        body["processing_time_ms"] = {
            "decode": _ms(prepared.decode_ms),
            "preprocess": _ms(prepared.preprocess_ms),
            "queue": _ms(outcome.queue_ms),
            "inference": _ms(outcome.inference_ms),
            "total": _ms((time.perf_counter() - request.state.started) * 1000),
        }
        body["batch_size"] = outcome.batch_size
        body["model"] = _model_ref(model)
        body["request_id"] = rid(request)
        service.metrics.images.labels("ok").inc()
        return JSONResponse(body)

    @app.post(
        "/detect/batch",
        response_model=None,
        openapi_extra=batch_doc,
        responses={200: {"model": schemas.BatchResponse}, **_UPLOAD_ERRORS},
    )
    async def detect_batch(request: Request) -> JSONResponse:
        """Classify 1..max_batch_files images (multipart field `files`), results in request order."""
        model = service.require_ready()
        assert service.batcher is not None
        form = await _read_form(request, max_files=config.max_batch_files)
        with service.batcher.incoming():
            try:
                if "files" not in form:
                    raise ApiError(
                        422,
                        "missing_field",
                        "multipart field 'files' is required (curl -F files=@a.jpg -F files=@b.png URL/detect/batch)",
                    )
                parts = [p for p in form.getlist("files") if not _is_placeholder(p)]
                if not parts:
                    raise ApiError(
                        400,
                        "empty_batch",
                        f"no files in the batch; send 1..{config.max_batch_files} images as multipart field 'files'",
                    )
                if not any(isinstance(p, UploadFile) for p in parts):  # as /detect answers a text field 'file'
                    raise ApiError(
                        422,
                        "missing_field",
                        "multipart field 'files' holds text, not file uploads (curl -F files=@a.jpg URL/detect/batch)",
                    )
                if len(parts) > config.max_batch_files:  # text parts are not counted by the multipart parser
                    raise ApiError(
                        413,
                        "too_many_files",
                        f"{len(parts)} files in one request; the limit is {config.max_batch_files}",
                    )
                prepared = await service.prepare(parts, model, rid(request))
                names = [
                    p.filename[:_FILENAME_MAX] if isinstance(p, UploadFile) and p.filename else None for p in parts
                ]
            finally:
                await form.close()
            good = [i for i, p in enumerate(prepared) if p.tensor is not None]
            futures = service.submit([prepared[i].tensor for i in good]) if good else []  # type: ignore[misc]
        outcomes = dict(zip(good, await asyncio.gather(*futures), strict=True))
        results = []
        for i, p in enumerate(prepared):
            item: dict[str, Any] = {"index": i, "filename": names[i]}
            if i in outcomes:
                out = outcomes[i]
                item.update(ok=True, status=200, **decide(out.probs, model.labels, model.positive, config.threshold))
                item["processing_time_ms"] = {
                    "decode": _ms(p.decode_ms),
                    "preprocess": _ms(p.preprocess_ms),
                    "queue": _ms(out.queue_ms),
                    "inference": _ms(out.inference_ms),
                }
                service.metrics.images.labels("ok").inc()
            else:
                item.update(ok=False, status=p.status, error=p.error, detail=p.detail)
                service.metrics.images.labels(p.error or "error").inc()
            results.append(item)
        total_ms = (time.perf_counter() - request.state.started) * 1000
        return JSONResponse(
            {
                "results": results,
                "stats": {
                    "count": len(results),
                    "ok": len(outcomes),
                    "failed": len(results) - len(outcomes),
                    "total_ms": _ms(total_ms),
                    "ms_per_image": _ms(total_ms / len(results)),
                },
                "model": _model_ref(model),
                "request_id": rid(request),
            }
        )

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _is_placeholder(part: Any) -> bool:
    """An empty form slot (a browser's unfilled file input, ``-F files=``): not an image, just nothing."""
    if isinstance(part, UploadFile):
        return not part.filename and not part.size
    return part == ""
