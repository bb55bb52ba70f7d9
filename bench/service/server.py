"""Run the detect service on uvicorn: bind first (port 0 = any free port), say on stderr when ready.

Lines on stderr that scripts may wait for (``bench load`` and tests do):

    bench serve: listening on http://127.0.0.1:8007 ...
    bench serve: ready on http://127.0.0.1:8007 ...           (model loaded and warmed up)
    bench serve: model not loaded on http://127.0.0.1:8007 — <reason> ...

SIGTERM or Ctrl-C stops accepting connections, lets in-flight requests finish (up to
``graceful_timeout_s``), then exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

from bench.errors import InputError
from bench.service.config import ServiceConfig

LISTENING_PREFIX = "bench serve: listening on "
READY_PREFIX = "bench serve: ready on "
FAILED_PREFIX = "bench serve: model not loaded on "


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 picks a free one); InputError when it cannot bind."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r} does not resolve: {exc.strerror or exc}") from exc
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port (0 picks a free one)"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def _exit_zero_after_signals() -> Iterator[None]:
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown; make that a plain return (exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def build_server(
    config: ServiceConfig,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_timeout_s: float | None = 30.0,
    on_state: Callable[..., None] | None = None,
) -> object:
    """A uvicorn.Server for the detect app (not started)."""
    import uvicorn

    from bench.service.app import create_app

    app = create_app(config, on_state=on_state)
    uv_config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout_s,
        server_header=False,
    )
    return uvicorn.Server(uv_config)


def serve(
    config: ServiceConfig,
    host: str = "127.0.0.1",
    port: int = 8007,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_timeout_s: float | None = 30.0,
    log: Callable[[str], None] = _stderr,
) -> None:
    """Serve until SIGTERM/SIGINT; the model loads in the background while the port already answers."""
    sock = bind_socket(host, port)
    url = url_of(sock)
    where = config.model_dir if config.model_dir is not None else "the default model dir"
    log(
        f"{LISTENING_PREFIX}{url}; loading {config.variant} on {config.provider} from {where} "
        "(/health/ready answers 503 until the model is ready)"
    )

    def on_state(service: object) -> None:
        model = getattr(service, "model", None)
        if model is not None:
            log(
                f"{READY_PREFIX}{url} · {model.variant} on {model.provider} "
                f"({', '.join(model.providers_effective)}) · {model.model_path} · "
                f"max batch {model.max_batch}, max delay {config.max_delay_ms:g} ms"
            )
        else:
            log(
                f"{FAILED_PREFIX}{url} — {getattr(service, 'reason', '?')}; /detect answers 503 "
                "(the server stays up; see /health)"
            )

    server = build_server(
        config, log_level=log_level, access_log=access_log, graceful_timeout_s=graceful_timeout_s, on_state=on_state
    )
    with sock, _exit_zero_after_signals():
        server.run(sockets=[sock])  # type: ignore[attr-defined]
    log("bench serve: stopped")
