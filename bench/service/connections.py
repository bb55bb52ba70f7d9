"""Connections the server can afford: a header-read deadline, idle connections make room, quiet error logs.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but it has no deadline for a request
head: a few hundred silent or half-sent connections (slowloris) would hold every file descriptor.
:func:`guarded_protocol` is uvicorn's own h11 protocol with these rules:

- a request head (request line and headers) must be complete within ``header_timeout_s`` of the
  connection opening or of the previous response, else the connection is closed;
- at ``max_connections`` connections, a new connection closes the longest-idle one (no request in flight,
  idle for at least ``EVICTABLE_AFTER_S``: a client that connected a moment ago is about to send its request);
- past ``hard_limit`` connections (the open files the server can spare), a new connection is closed at once;
- a request body sent in tiny pieces is cut off: past ``FREE_BODY_PIECES`` pieces (chunks of a chunked
  body), the pieces must average ``MIN_PIECE_BYTES``, else the connection is closed (h11 parses each chunk
  in Python: 3 MB as 1-byte chunks cost 28 s of CPU and stalled the event loop for everyone).

Requests in flight are limited by the app (bench.service.middleware says why not by uvicorn).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("bench.service")
# Idle this long, a connection may be closed to make room: longer than a client takes from connect to request.
EVICTABLE_AFTER_S = 0.25
# Body pieces a request may send in any size; past them, pieces must average MIN_PIECE_BYTES.
FREE_BODY_PIECES = 256
MIN_PIECE_BYTES = 1024


def guarded_protocol(
    header_timeout_s: float,
    max_connections: int,
    hard_limit: int | None = None,
    on_drop: Callable[[str], None] | None = None,
) -> type[Any]:
    """uvicorn's H11Protocol with a request-head deadline and idle-first eviction.

    ``on_drop(reason)`` is called for each connection closed by these rules (``header_timeout``, ``evicted``,
    ``over_limit``, ``chunk_flood``).
    """
    hard = hard_limit if hard_limit is not None else 2 * max_connections
    from uvicorn.protocols.http import h11_impl
    from uvicorn.protocols.http.h11_impl import H11Protocol

    h11 = h11_impl.h11  # the h11 module uvicorn's protocol speaks

    class GuardedH11Protocol(H11Protocol):
        idle_since: float | None = None  # waiting for a request head since (monotonic), None while serving
        _head_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._count_pieces()
            self._make_room()
            if len(self.connections) > hard:
                self._drop("over_limit")
                return
            self._await_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is in: a request is being served
                self._head_received()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_received()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._head_received()
            self.idle_since = time.monotonic()
            self._head_timer = self.loop.call_later(header_timeout_s, self._drop, "header_timeout")

        def _head_received(self) -> None:
            self.idle_since = None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _count_pieces(self) -> None:
            """Count each request's body pieces as h11 parses them; stop parsing a flood of tiny ones."""
            next_event = self.conn.next_event
            pieces = [0, 0]  # pieces, bytes of the request being read

            def counted() -> Any:
                event = next_event()
                if isinstance(event, h11.Request):
                    pieces[:] = [0, 0]
                elif isinstance(event, h11.Data):
                    pieces[0] += 1
                    pieces[1] += len(event.data)
                    if pieces[0] > FREE_BODY_PIECES and pieces[1] < pieces[0] * MIN_PIECE_BYTES:
                        self._drop("chunk_flood")
                        return h11.PAUSED  # uvicorn stops parsing this connection's data
                return event

            self.conn.next_event = counted  # type: ignore[method-assign]

        def _make_room(self) -> None:
            if len(self.connections) < max_connections:
                return
            stale = time.monotonic() - EVICTABLE_AFTER_S
            guarded = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self]
            idle = sorted(
                (c for c in guarded if c.idle_since is not None and c.idle_since < stale),
                key=lambda c: c.idle_since or 0.0,
            )
            for connection in idle[: len(self.connections) - max_connections + 1]:
                connection._drop("evicted")
            # if nothing could go, every other connection is busy or just arrived: all stay, and requests
            # beyond the limit in flight get the app's 503

        def _drop(self, reason: str) -> None:
            self._head_received()
            self.connections.discard(self)
            if not self.transport.is_closing():
                self.transport.close()
                if on_drop is not None:
                    on_drop(reason)

    return GuardedH11Protocol


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise this process's soft open-file limit towards ``wanted`` (within the hard limit); the new soft limit.

    None where there is no such limit to read (Windows).
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class RateLimitFilter(logging.Filter):
    """Lets one record per (logger, message template) through every ``interval_s``; says how many it held back.

    A flood of identical errors ("Too many open files" on every accept, a client error per request) must
    not fill the disk: the first is logged with its traceback, the rest are counted.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.interval_s:g} s not logged]"
        if len(self._last) > 1024:  # many distinct messages: forget the oldest
            for old in sorted(self._last, key=self._last.__getitem__)[:512]:
                self._last.pop(old, None)
                self._held.pop(old, None)
        return True


RATE_LIMITED_LOGGERS = ("asyncio", "uvicorn.error", "bench.service")


def install_log_rate_limit(interval_s: float = 10.0) -> RateLimitFilter:
    """Put one :class:`RateLimitFilter` on the loggers a flood of connection errors goes through."""
    flt = RateLimitFilter(interval_s)
    for name in RATE_LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RateLimitFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt
