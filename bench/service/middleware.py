"""The one ASGI middleware in front of the app: request id, body-size limit on streamed bytes, metrics.

Starlette has no total body limit, and a Content-Length header can be absent (chunked upload) or lie,
so the limit counts the bytes the app actually receives: past it, ``receive`` raises
:class:`BodyTooLarge` and the request is answered 413 with nothing more read into memory. (uvicorn then
discards whatever the client still sends, so the client can read the 413.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


class BodyTooLarge(Exception):
    """The request body passed the limit for its path (HTTP 413)."""

    def __init__(self, limit: int, received: int | None = None, declared: int | None = None):
        self.limit = limit
        if declared is not None:
            detail = f"request body of {declared:,} bytes (Content-Length) exceeds the limit of {limit:,} bytes"
        else:
            detail = f"request body exceeds the limit of {limit:,} bytes (stopped reading at {received:,})"
        super().__init__(detail)


def error_body(error: str, detail: str, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """Every error the service answers has this JSON shape."""
    return {"error": error, "detail": detail, "request_id": request_id, **extra}


def request_id_of(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= 128 and set(text) <= _REQUEST_ID_OK:
                return text
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class ServiceMiddleware:
    """Assigns ``request_id`` (or keeps a sane incoming X-Request-ID), enforces the body limit, records metrics."""

    def __init__(
        self,
        app: Any,
        body_limit: Callable[[str], int | None],
        metrics: Any,
        on_done: Callable[[str, int], None] | None = None,
    ):
        self.app = app
        self.body_limit = body_limit
        self.metrics = metrics
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["started"] = started
        path = scope.get("path", "")
        status = {"code": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        limit = self.body_limit(path)
        declared = _content_length(scope)
        try:
            if limit is not None and declared is not None and declared > limit:
                raise BodyTooLarge(limit, declared=declared)  # refuse before reading a byte
            await self.app(scope, self._limited(receive, limit) if limit is not None else receive, send_wrapper)
        except BodyTooLarge as exc:  # raised while the app read the body (or above)
            if status["started"]:
                raise
            await _send_json(send_wrapper, 413, error_body("payload_too_large", str(exc), request_id))
        finally:
            self.metrics.observe_request(path, status["code"], time.perf_counter() - started)
            if self.on_done is not None:
                self.on_done(path, status["code"])

    @staticmethod
    def _limited(receive: Receive, limit: int) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, received=received)
            return message

        return limited_receive


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})
