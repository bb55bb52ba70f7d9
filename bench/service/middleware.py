"""The one ASGI middleware in front of the app: request id, Host check, concurrency and body limits, errors, metrics.

Starlette has no total body limit, and a Content-Length header can be absent (chunked upload) or lie,
so the limit counts the bytes the app actually receives: past it, ``receive`` raises
:class:`BodyTooLarge` and the request is answered 413 with nothing more read into memory. (uvicorn then
discards whatever the client still sends, so the client can read the 413.)

Whatever happens below, the client gets the JSON error shape and learns nothing about the internals:
an unexpected exception is a generic 500 naming the request id (the traceback goes to the server log
under that id); a request still running at the graceful-shutdown deadline is a 503; a client that hangs
up mid-request is counted as 499 (nginx's "client closed request"), not as a server error.

Requests in flight are limited here, not by uvicorn's ``limit_concurrency``: uvicorn answers its 503 in
plain text from a stand-in app and closes the connection without reading the request body, so a client
still sending an upload gets a reset (EPIPE/ECONNRESET) instead of the answer. Here the 503 is the JSON
error shape with Retry-After, and the connection stays open (uvicorn discards the unread body).

A request with a body takes its place in flight only once the body is in: a client that sends a head and
then stalls holds a connection, not a slot that a complete request could use. Bodies still arriving are
bounded instead by a deadline (no byte for ``body_timeout_s``, or an average rate under
``MIN_BODY_RATE`` after that grace → 408, connection closed) and by ``max_pending_body`` bytes held by
all requests in flight together (the multipart parser spools them to temp files) → 503.

Once a body is in, a watcher waits for the client to hang up: the request's task is then cancelled, so
decoding and inference queued for a client that has gone never run (counted as 499).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

CLIENT_CLOSED = 499  # the metrics status of a request whose client hung up before its answer
# After the first body_timeout_s, a request body must keep arriving at this average rate at least (bytes/s).
MIN_BODY_RATE = 16 * 1024
_REQUEST_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
# JSON that is safe to show anywhere: <, > and & as \u escapes (same value once parsed), so a file name
# like "<script>" echoed back can never be read as markup, whatever a client does with the bytes.
_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"),)
# Not counted against the concurrency limit: answered from memory at once, and wanted most when overloaded
# (an orchestrator restarts a server whose liveness fails; metrics show why it is overloaded).
UNLIMITED_PATHS = frozenset({"/health/live", "/metrics"})
log = logging.getLogger("bench.service")


class BodyTooLarge(Exception):
    """The request body passed the limit for its path (HTTP 413)."""

    def __init__(self, limit: int, received: int | None = None, declared: int | None = None):
        self.limit = limit
        if declared is not None:
            detail = f"request body of {declared:,} bytes (Content-Length) exceeds the limit of {limit:,} bytes"
        else:
            detail = f"request body exceeds the limit of {limit:,} bytes (stopped reading at {received:,})"
        super().__init__(detail)


class BodyTimeout(Exception):
    """The request body stalled (HTTP 408)."""


class PendingBodiesFull(Exception):
    """Request bodies in flight already hold ``max_pending_body`` bytes (HTTP 503)."""


class AtConcurrencyLimit(Exception):
    """``limit_concurrency`` requests are already in flight (HTTP 503)."""


def error_body(error: str, detail: str, request_id: str | None, **extra: Any) -> dict[str, Any]:
    """Every error the service answers has this JSON shape."""
    return {"error": error, "detail": detail, "request_id": request_id, **extra}


def json_bytes(content: Any) -> bytes:
    """Compact UTF-8 JSON with <, > and & escaped (the service's one JSON encoding)."""
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(_HTML_SAFE).encode("utf-8")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if 0 < len(text) <= 128 and set(text) <= _REQUEST_ID_OK:
                return text
    return None


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class HostCheck:
    """Whether a request's Host header is allowed: starlette's TrustedHostMiddleware decides, we answer."""

    def __init__(self, allowed_hosts: Sequence[str]):
        self.allowed_hosts = tuple(allowed_hosts)
        self._check = TrustedHostMiddleware(self._passed, allowed_hosts=list(allowed_hosts), www_redirect=False)

    @staticmethod
    async def _passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["host_allowed"] = True

    async def allows(self, scope: Scope) -> bool:
        async def discard(message: Message) -> None:  # its own plain-text 400: we answer in JSON instead
            return None

        await self._check(scope, _nothing_to_receive, discard)
        return bool(scope["state"].pop("host_allowed", False))


async def _nothing_to_receive() -> Message:
    return {"type": "http.disconnect"}


class ServiceMiddleware:
    """Request id, Host check, concurrency and body limits, JSON errors for what escapes the app, metrics.

    Past ``limit_concurrency`` requests in flight (``UNLIMITED_PATHS`` aside), a request is answered 503
    with ``Retry-After: retry_after_s``.
    """

    def __init__(
        self,
        app: Any,
        body_limit: Callable[[str], int | None],
        metrics: Any,
        on_done: Callable[[str, int], None] | None = None,
        allowed_hosts: Sequence[str] = ("*",),
        limit_concurrency: int | None = None,
        retry_after_s: int = 1,
        body_timeout_s: float = 10.0,
        max_pending_body: int | None = None,
        on_idle: Callable[[], None] | None = None,
    ):
        self.app = app
        self.body_limit = body_limit
        self.metrics = metrics
        self.on_done = on_done
        self.hosts = HostCheck(allowed_hosts)
        self.limit_concurrency = math.inf if limit_concurrency is None else limit_concurrency
        self.retry_after_s = retry_after_s
        self.in_flight = 0  # requests admitted and not yet answered, UNLIMITED_PATHS aside
        self.body_timeout_s = body_timeout_s
        self.max_pending_body = math.inf if max_pending_body is None else max_pending_body
        self.pending_body = 0  # body bytes received by the requests in flight (spooled until they are answered)
        self.on_idle = on_idle
        self.open_requests = 0  # every request being handled, bodies still arriving included

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
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        async def answer(code: int, error: str, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
            if not status["started"]:
                await _send_json(send_wrapper, code, error_body(error, detail, request_id), headers)

        limit = self.body_limit(path)
        declared = _content_length(scope)
        limited = path not in UNLIMITED_PATHS
        slot = {"held": False}
        body = {"received": 0, "done": not _has_body(scope)}
        watcher: asyncio.Task[None] | None = None
        task = asyncio.current_task()
        gone = {"client": False}

        def take_slot() -> None:
            if not limited or slot["held"]:
                return
            if self.in_flight >= self.limit_concurrency:
                raise AtConcurrencyLimit
            self.in_flight += 1
            slot["held"] = True

        async def watch_disconnect() -> None:
            """Cancel the request when its client hangs up before the answer (the body is in by now)."""
            message = await receive()
            if message["type"] == "http.disconnect" and not status["started"] and task is not None:
                gone["client"] = True
                task.cancel()

        async def guarded_receive() -> Message:
            nonlocal watcher
            message = await self._receive_in_time(receive, body, started)
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if self.pending_body + size > self.max_pending_body:
                    raise PendingBodiesFull
                self.pending_body += size
                self.metrics.pending_body_bytes.set(self.pending_body)
                body["received"] += size
                if limit is not None and body["received"] > limit:
                    raise BodyTooLarge(limit, received=body["received"])
                if not message.get("more_body", False):
                    body["done"] = True
                    take_slot()
                    if watcher is None:
                        watcher = asyncio.ensure_future(watch_disconnect())
            elif message["type"] == "http.disconnect":
                body["done"] = True
            return message

        self.open_requests += 1
        try:
            if not await self.hosts.allows(scope):
                await answer(400, "host_not_allowed", _host_detail(scope, self.hosts.allowed_hosts))
            elif limit is not None and declared is not None and declared > limit:
                await answer(413, "payload_too_large", str(BodyTooLarge(limit, declared=declared)))
            else:
                if body["done"]:  # no body to wait for: in flight from now
                    take_slot()
                await self.app(scope, guarded_receive, send_wrapper)
        except AtConcurrencyLimit:
            self.metrics.refused("concurrency_limit")
            await answer(
                503,
                "overloaded",
                f"{self.limit_concurrency} requests already in flight, the most this server takes "
                "(--limit-concurrency); retry later",
                [(b"retry-after", str(self.retry_after_s).encode())],
            )
        except PendingBodiesFull:
            self.metrics.refused("pending_bodies")
            await answer(
                503,
                "overloaded",
                f"uploads in flight already hold {self.pending_body:,} bytes, the most this server keeps "
                f"({self.max_pending_body:,}, --max-pending-upload-mb); retry later",
                [(b"retry-after", str(self.retry_after_s).encode()), (b"connection", b"close")],
            )
        except BodyTimeout as exc:
            await answer(408, "body_timeout", str(exc), [(b"connection", b"close")])
        except BodyTooLarge as exc:  # raised while the app read the body
            if status["started"]:
                raise
            await answer(413, "payload_too_large", str(exc))
        except ClientDisconnect:
            status["code"] = CLIENT_CLOSED
            log.info("request %s to %s: the client disconnected before the answer", request_id, path)
        except asyncio.CancelledError:
            if gone["client"]:  # our watcher: the client hung up, nothing left to answer
                status["code"] = CLIENT_CLOSED
                _uncancel()
            elif status["started"]:
                raise
            else:  # uvicorn's graceful-shutdown deadline passed with this request running
                await answer(
                    503,
                    "shutting_down",
                    "the server is shutting down and this request did not finish in time; retry",
                    [(b"retry-after", b"1"), (b"connection", b"close")],
                )
                _uncancel()
        except Exception:
            if status["started"]:
                raise
            log.error("request %s to %s failed", request_id, path, exc_info=True)
            await answer(
                500,
                "internal_error",
                f"unexpected server error; the server log has the details under request id {request_id}",
            )
        finally:
            if watcher is not None:
                watcher.cancel()
            if slot["held"]:
                self.in_flight -= 1
            self.pending_body -= body["received"]
            self.metrics.pending_body_bytes.set(self.pending_body)
            self.open_requests -= 1
            self.metrics.observe_request(path, status["code"], time.perf_counter() - started)
            if self.on_done is not None:
                self.on_done(path, status["code"])
            if self.open_requests == 0 and self.on_idle is not None:
                self.on_idle()

    async def _receive_in_time(self, receive: Receive, body: dict[str, Any], started: float) -> Message:
        """The next message, or BodyTimeout: no byte for body_timeout_s, or under MIN_BODY_RATE after that."""
        if body["done"]:
            return await receive()
        now = time.perf_counter()
        by_rate = started + self.body_timeout_s + body["received"] / MIN_BODY_RATE
        wait = max(0.0, min(self.body_timeout_s, by_rate - now))
        try:
            return await asyncio.wait_for(receive(), timeout=wait)
        except TimeoutError:
            got = body["received"]
            raise BodyTimeout(
                f"request body too slow: {got:,} bytes in {now + wait - started:.1f} s; send the body without "
                f"pauses over {self.body_timeout_s:g} s and at {MIN_BODY_RATE // 1024} KiB/s at least "
                "(--body-timeout)"
            ) from None


def _host_detail(scope: Scope, allowed: Sequence[str]) -> str:
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
    shown = "no Host header" if host is None else f"Host {host[:80]!r}"
    return f"{shown} is not served here; allowed: {', '.join(allowed)} (bench serve --allowed-hosts)"


def _uncancel() -> None:
    """The cancellation was answered (503): let the task finish normally instead of logging a traceback."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python ≥ 3.11
        task.uncancel()


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = json_bytes(body)
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
