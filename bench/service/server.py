"""Run the detect service on uvicorn: bind first (port 0 = any free port), say on stderr when ready.

Lines on stderr that scripts may wait for (``bench load`` and tests do):

    bench serve: listening on http://127.0.0.1:8007 ...
    bench serve: ready on http://127.0.0.1:8007 ...           (model loaded and warmed up)
    bench serve: model not loaded on http://127.0.0.1:8007 — <reason> ...

SIGTERM or Ctrl-C stops accepting connections, lets in-flight requests finish (up to
``graceful_timeout_s``; those still running then get a JSON 503), then exits 0 — at once while the model
is still loading.

Connections are bounded (bench.service.connections): a request head must arrive within
``header_timeout_s``, idle keep-alive connections close after ``keep_alive_s``, and at
``limit_concurrency`` connections the longest-idle one makes room. Requests beyond ``limit_concurrency``
in flight get the app's JSON 503 (bench.service.middleware).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator

from bench.affinity import parse_cpus, pin_process
from bench.bundle import Bundle, is_pytorch_variant, resolve_model_dir
from bench.errors import BenchError, InputError
from bench.service.config import ServiceConfig
from bench.service.connections import guarded_protocol, install_log_rate_limit, raise_open_file_limit
from bench.variants import recipe_names, variant_order

# Largest request head (request line + headers) h11 buffers before answering 400 (its own default is 16 KiB).
MAX_HEAD_BYTES = 16 * 1024
# Open files kept free of connections: the listening socket, log files, model files, the decode pool's temp files.
RESERVED_FILES = 64
# Listen backlog, which is also how many connections asyncio accepts in one go before any of them is looked at.
BACKLOG = 2048
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
    backlog: int = BACKLOG,
) -> object:
    """A uvicorn.Server for the detect app (not started), with the connection limits of ``config``."""
    import uvicorn

    from bench.service.app import create_app

    app = create_app(config, on_state=on_state)
    service = app.state.service
    uv_config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout_s,  # type: ignore[arg-type]  # annotated int, used as a float timeout
        server_header=False,
        http=guarded_protocol(
            config.header_timeout_s,
            config.limit_concurrency,
            hard_limit=config.limit_concurrency + backlog,  # fit_to_open_files keeps that many files free
            on_drop=service.metrics.connection_dropped,
        ),
        timeout_keep_alive=config.keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        backlog=backlog,
    )
    return uvicorn.Server(uv_config)


def check_servable(config: ServiceConfig) -> None:
    """InputError (exit 2) now, not a server that can never be ready: a variant no file or recipe provides.

    A model folder that cannot be read is left to the loader: the server then stays up and says why.
    """
    try:
        bundle = Bundle.discover(resolve_model_dir(config.model_dir))
    except BenchError:
        return
    known = {*bundle.variants, *recipe_names(bundle)}
    for name, flag in ((config.variant, "--variant"), (config.fallback, "--fallback")):
        if name is not None and name not in known and not is_pytorch_variant(name):
            raise InputError(
                f"{flag} {name!r} is not in {bundle.root} and no recipe builds it; "
                f"available: {', '.join(variant_order(list(known)))}"
            )


def fit_to_open_files(config: ServiceConfig, log: Callable[[str], None]) -> tuple[ServiceConfig, int]:
    """The config and listen backlog that fit the open-file limit (raised first, up to the hard limit).

    asyncio accepts up to ``backlog`` connections in one go before idle ones can be closed to make room,
    so a burst of connections needs that many files free beyond ``limit_concurrency``: past the limit,
    accept fails ("Too many open files") and asyncio stops accepting for a second, /health/live included.
    """
    wanted = config.limit_concurrency + RESERVED_FILES + BACKLOG
    soft = raise_open_file_limit(wanted)
    if soft is None or soft >= wanted:
        return config, BACKLOG
    backlog = max(16, min(BACKLOG, (soft - RESERVED_FILES) // 4))
    fits = max(2, min(config.limit_concurrency, soft - RESERVED_FILES - 2 * backlog))  # a burst, and as many closing
    asked = "" if fits == config.limit_concurrency else f" (asked {config.limit_concurrency})"
    log(f"bench serve: open-file limit is {soft}: --limit-concurrency {fits}{asked}, listen backlog {backlog}")
    return dataclasses.replace(config, limit_concurrency=fits), backlog


def _with_bind_host(config: ServiceConfig, host: str) -> ServiceConfig:
    """The address the server listens on is a name its clients use: allow it too (not the wildcards)."""
    if host in ("", "0.0.0.0", "::") or "*" in config.allowed_hosts:
        return config
    name = f"[{host}]" if ":" in host else host
    if name.lower() in (h.lower() for h in config.allowed_hosts):
        return config
    return dataclasses.replace(config, allowed_hosts=(*config.allowed_hosts, name))


def _configure_logging(log_level: str) -> None:
    """bench.service lines on stderr like uvicorn's, and no log message repeated more than once per 10 s."""
    logger = logging.getLogger("bench.service")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bench serve: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(log_level.upper())
    install_log_rate_limit()


def _pin(config: ServiceConfig, log: Callable[[str], None]) -> ServiceConfig:
    """``--cpus``: this process on those CPUs before any thread starts; ORT's threads fitted to them unless
    ``--threads`` says (its default, one per physical core, would queue its threads on fewer CPUs)."""
    if config.cpus is None:
        return config
    cpus = parse_cpus(config.cpus)
    pin_process(cpus)
    threads = config.threads if config.threads is not None else len(cpus)
    log(f"bench serve: pinned to CPU {config.cpus} with {threads} intra-op thread{'s' if threads != 1 else ''}")
    return dataclasses.replace(config, threads=threads)


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
    check_servable(config)
    config = _pin(config, log)
    config, backlog = fit_to_open_files(_with_bind_host(config, host), log)
    _configure_logging(log_level)
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
                + (
                    f" · FALLBACK to {model.variant} ({model.backend}): {model.fallback_reason}"
                    if model.fallback_reason
                    else ""
                )
            )
        else:
            log(
                f"{FAILED_PREFIX}{url} — {getattr(service, 'reason', '?')}; /detect answers 503 "
                "(the server stays up; see /health)"
            )

    server = build_server(
        config,
        log_level=log_level,
        access_log=access_log,
        graceful_timeout_s=graceful_timeout_s,
        on_state=on_state,
        backlog=backlog,
    )
    with sock, _exit_zero_after_signals():
        server.run(sockets=[sock])  # type: ignore[attr-defined]
    log("bench serve: stopped")
