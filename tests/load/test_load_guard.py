"""``bench load`` stays where it is pointed and believes only real answers (issue #29, items 7–8).

Small HTTP servers on loopback stand in for a hostile target: one that redirects to a second loopback
address (127.0.0.2, never a non-loopback one), one with an endless body, one that answers HTML, one that
never answers. Each stops by itself.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench import load
from bench.cli import main
from bench.load import LoadSpec, engine, spec


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(root / "a.png")
    return (root / "a.png",)


@contextlib.contextmanager
def http_server(host: str, answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[tuple[str, list[str]]]:
    """A threaded HTTP server on ``host`` (a free port) answering each request with ``answer``; the URL and the
    paths it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            seen.append(self.path)
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            answer(self)

        do_GET = do_POST = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _json(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200, ctype: str = "application/json") -> None:
    handler.send_response(status)
    handler.send_header("content-type", ctype)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _detect_answer(handler: BaseHTTPRequestHandler) -> None:
    _json(handler, b'{"label":"Real","fake_probability":0.1,"status":"alive"}')


def test_a_redirect_to_another_loopback_address_is_an_error_and_not_followed(image_paths: tuple[Path, ...]) -> None:
    with http_server("127.0.0.2", _detect_answer) as (elsewhere, reached):

        def redirect(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(307)
            handler.send_header("location", elsewhere + handler.path)
            handler.send_header("content-length", "0")
            handler.end_headers()

        with http_server("127.0.0.1", redirect) as (url, _):
            result = load.run_load(
                LoadSpec(url=url, rate=20, duration_s=1.0, timeout_s=3, images=image_paths, measure_ceiling=False)
            )
    assert reached == [] and result.ok == 0 and result.errors == {"307": 20}
    assert "not followed" in result.error_examples["307"]


def test_an_endless_answer_is_cut_at_the_cap(image_paths: tuple[Path, ...]) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
        deadline = time.monotonic() + 10  # stops by itself
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                handler.wfile.write(chunk)

    with http_server("127.0.0.1", endless) as (url, _):
        t0 = time.monotonic()
        result = load.run_load(
            LoadSpec(url=url, rate=5, duration_s=1.0, timeout_s=8, images=image_paths, measure_ceiling=False)
        )
    assert result.ok == 0 and result.errors == {"too_large": 5}, result.errors
    assert time.monotonic() - t0 < 6


def test_a_2xx_that_is_not_the_service_answer_fails_the_run(image_paths: tuple[Path, ...], tmp_path: Path) -> None:
    def html(handler: BaseHTTPRequestHandler) -> None:
        _json(handler, b"<html><body>hello</body></html>", ctype="text/html")

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(image_paths[0].read_bytes())
    args = ["load", "--rate", "10", "--duration", "0.5", "--no-ceiling", "--images", str(tmp_path / "imgs")]
    with http_server("127.0.0.1", html) as (url, _):
        failed = CliRunner().invoke(main, [*args, "--url", url, "--json"])
        tolerated = CliRunner().invoke(main, [*args, "--url", url, "--max-error-rate", "100"])
    assert failed.exit_code == 1, failed.output
    assert '"bad_answer": 5' in failed.output and "over --max-error-rate 0 %" in failed.output
    assert tolerated.exit_code == 0, tolerated.output
    with http_server("127.0.0.1", _detect_answer) as (url, _):
        good = CliRunner().invoke(main, [*args, "--url", url])
    assert good.exit_code == 0, good.output


def test_the_ceiling_probe_honours_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        t0 = time.monotonic()
        ceiling, why = engine.generator_ceiling(f"http://127.0.0.1:{silent.getsockname()[1]}", 1.0, timeout_s=1.0)
        took = time.monotonic() - t0
    assert ceiling is None and "timeout" in why
    assert took < 2.5


def test_localhost_with_a_trailing_dot_is_resolved_before_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """``localhost.`` goes to DNS: it is loopback only when every address it resolves to is (no DNS traffic:
    the resolver is faked)."""
    answers = {"localhost.": ["192.0.2.7"]}

    def getaddrinfo(name: str, *args: object, **kw: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in answers.get(name, [])]

    monkeypatch.setattr(spec.socket, "getaddrinfo", getaddrinfo)
    assert not spec.is_loopback("localhost.")
    answers["localhost."] = ["127.0.0.1"]
    assert spec.is_loopback("localhost.")
    assert spec.is_loopback("localhost")  # the bare name: loopback by definition, never resolved
