"""Helpers for tests that talk to a server over raw sockets or run ``bench serve`` in a subprocess."""

from __future__ import annotations

import resource
import socket
import subprocess
import time

from cli import BENCH, bench_env


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def serve(args: list[str], env: dict[str, str] | None = None, nofile: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    full_env = bench_env({"PYTHONUNBUFFERED": "1", **(env or {})})
    full_env.pop("BENCH_MODEL_DIR", None)
    return subprocess.Popen(
        [*BENCH, "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        preexec_fn=limit,
    )


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 90) -> tuple[str, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"bench serve exited {proc.wait()}: {seen}")
        seen.append(line)
        if line.startswith(prefix):
            return line, seen
    raise AssertionError(f"no {prefix!r} line in {timeout} s: {seen}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
