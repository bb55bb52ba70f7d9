"""The reference detect service: FastAPI app factory and its endpoints (paths and status codes: CLI.md).

The model loads in the background after the server starts listening, so liveness answers at once and
readiness (and /detect) answer 503 with the reason until the session exists and a warm-up inference
succeeded; a model that fails to load leaves the server up, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from bench import __version__, gpu
from bench.preprocess import ImageError, decode_image, to_tensor
from bench.service import schemas
from bench.service.batcher import DynamicBatcher, QueueFull
from bench.service.config import ServiceConfig
from bench.service.metrics import ServiceMetrics
from bench.service.middleware import ServiceMiddleware, error_body
from bench.service.model import LoadedModel, ModelNotLoaded, decide, load_model

SERVICE_NAME = "Deepfake Detection"
_MB = 1024 * 1024
_IMAGE_ERRORS = {  # ImageError.kind → (status, error code)
    "unsupported": (415, "unsupported_media_type"),
    "corrupt": (400, "bad_image"),
    "too_large": (413, "image_too_large"),
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        400: "Undecodable or truncated image, empty batch, malformed multipart body.",
        413: "Body over the upload limit, image over the pixel limit (decompression bomb), too many files.",
        415: "Not an image type we accept (JPEG, PNG, WebP, GIF, BMP, TIFF).",
        422: "Missing multipart field.",
        503: "Model not ready (loading or failed to load) or queue full; see Retry-After.",
    }.items()
}


class ApiError(Exception):
    """An error answer: status, short code, one-line detail, optional headers."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Prepared:
    """One upload turned into a tensor, or the error it earned."""

    tensor: np.ndarray | None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    status: int = 200
    error: str | None = None
    detail: str | None = None


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
        self._prep_pool: ThreadPoolExecutor | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._decoding = 0  # uploads admitted but not yet queued for inference

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.gpu, self.gpu_reason = gpu.probe(self.config.device_id)
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="bench-infer")
        self._prep_pool = ThreadPoolExecutor(self.config.preprocess_workers, thread_name_prefix="bench-prep")
        self._load_task = asyncio.get_running_loop().create_task(self._load(), name="bench-load-model")

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._infer_pool, load_model, self.config)
        except ModelNotLoaded as exc:
            self.state, self.reason = "failed", str(exc)
        except Exception as exc:  # never let a load bug take the server down
            self.state, self.reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            self.model = model
            self.batcher = DynamicBatcher(
                model.infer,
                self._infer_pool,
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

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        if self.batcher is not None:
            await self.batcher.stop()
        for pool in (self._prep_pool, self._infer_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

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
        raise ApiError(503, "not_ready", what, {"Retry-After": str(retry)})

    async def prepare(self, upload: UploadFile, model: LoadedModel) -> Prepared:
        """Read, decode and preprocess one upload off the event loop (the pool bounds decoded images held)."""
        if upload.size is not None and upload.size > self.config.max_upload_bytes:
            return Prepared(
                None,
                status=413,
                error="payload_too_large",
                detail=f"file of {upload.size:,} bytes exceeds the limit of "
                f"{self.config.max_upload_bytes:,} bytes (--max-upload-mb)",
            )
        # Admission control: uploads waiting to be decoded count against --max-queue too, so overload is
        # answered with 503 at once instead of piling up, unbounded, in front of the inference queue.
        waiting = self._decoding + (self.batcher.depth if self.batcher is not None else 0)
        if waiting >= self.config.max_queue:
            raise ApiError(
                503,
                "overloaded",
                f"queue is full ({waiting} images decoding or waiting, --max-queue "
                f"{self.config.max_queue}); retry later",
                {"Retry-After": str(self.config.retry_after_s)},
            )
        self._decoding += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._prep_pool, _prepare, upload.file, model)
        finally:
            self._decoding -= 1

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
            "variant": self.config.variant,
            "provider": self.config.provider,
            "providers_effective": model.providers_effective if model else None,
            "model_state": self.state,
            "reason": self.reason,
            "model": None
            if model is None
            else {
                "file": str(model.model_path),
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
            "process": {"pid": os.getpid(), "rss_mb": round(psutil.Process().memory_info().rss / _MB, 1)},
            "version": __version__,
        }
        return (200 if self.state == "ready" else 503), body


def _prepare(stream: BinaryIO, model: LoadedModel) -> Prepared:
    stream.seek(0)
    data = stream.read()
    t0 = time.perf_counter()
    try:
        image = decode_image(data)
    except ImageError as exc:
        status, error = _IMAGE_ERRORS.get(exc.kind, (400, "bad_image"))
        return Prepared(None, status=status, error=error, detail=str(exc))
    except Exception as exc:  # a decoder bug on hostile input is still the input's fault: 400, server lives
        return Prepared(
            None, status=400, error="bad_image", detail=f"image does not decode: {type(exc).__name__}: {exc}"
        )
    del data
    t1 = time.perf_counter()
    tensor = to_tensor(image, model.preprocess)
    t2 = time.perf_counter()
    return Prepared(tensor, decode_ms=(t1 - t0) * 1000, preprocess_ms=(t2 - t1) * 1000)


async def _read_form(request: Request, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=max_files + 32)
    except HTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
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
    )
    app.state.service = service
    app.add_middleware(
        ServiceMiddleware, body_limit=config.body_limit, metrics=service.metrics, on_done=service.count_served
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

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("internal_error", f"{type(exc).__name__}: {exc}", rid(request)), status_code=500)

    @app.get(
        "/health",
        response_model=None,
        responses={200: {"model": schemas.HealthResponse}, 503: {"model": schemas.HealthResponse}},
    )
    async def health() -> JSONResponse:
        """Service, model and memory state (the seed report's shape plus extras); 503 while not ready."""
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/health/ready", response_model=None, responses={503: _ERROR_RESPONSES[503]})
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
        responses={200: {"model": schemas.DetectResponse}, **_ERROR_RESPONSES},
    )
    async def detect(request: Request) -> JSONResponse:
        """Classify one image (multipart field `file`); concurrent requests share inference batches."""
        model = service.require_ready()
        assert service.batcher is not None
        form = await _read_form(request, max_files=4)
        # announced only once the upload is in: a batch waits for a request being decoded (busy CPU),
        # never for a client still sending (an idle server)
        with service.batcher.incoming():
            try:
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    got = "" if upload is None else "; got a text field, not a file"
                    raise ApiError(
                        422,
                        "missing_field",
                        f"multipart file field 'file' is required (curl -F file=@image.jpg URL/detect){got}",
                    )
                prepared = await service.prepare(upload, model)
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
        responses={200: {"model": schemas.BatchResponse}, **_ERROR_RESPONSES},
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
                if len(parts) > config.max_batch_files:  # text parts are not counted by the multipart parser
                    raise ApiError(
                        413,
                        "too_many_files",
                        f"{len(parts)} files in one request; the limit is {config.max_batch_files}",
                    )
                prepared = await asyncio.gather(
                    *[service.prepare(p, model) if isinstance(p, UploadFile) else _text_part() for p in parts]
                )
                names = [p.filename if isinstance(p, UploadFile) else None for p in parts]
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


async def _text_part() -> Prepared:
    return Prepared(
        None,
        status=415,
        error="unsupported_media_type",
        detail="a text field, not a file upload; send images as multipart files",
    )
