"""What a load test sends, how fast and for how long (LoadSpec), and which targets it may hit.

A spec is checked when it is made, so a bad flag is an InputError before any request goes out;
targets are limited to loopback addresses unless ``allow_remote`` is set.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from bench.errors import InputError

# endpoint name → (method, path, multipart field)
ENDPOINTS: dict[str, tuple[str, str, str | None]] = {
    "detect": ("POST", "/detect", "file"),
    "batch": ("POST", "/detect/batch", "files"),
    "health": ("GET", "/health/live", None),
}
Arrival = Literal["constant", "poisson"]
ARRIVALS: tuple[Arrival, ...] = ("constant", "poisson")
DEFAULT_MAX_REQUESTS = 100_000  # the request cap when none is given: every run is bounded
MAX_DURATION_S = 3600.0


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how fast and for how long.

    ``LoadSpec(url="http://127.0.0.1:8007", endpoint="detect", rate=100, duration_s=30, images=paths)``
    is an open-loop run; ``concurrency=8`` (with ``rate=None``) makes it closed-loop.
    """

    url: str
    endpoint: str = "detect"
    rate: float | None = 10.0  # open loop: requests per second
    arrival: str = "constant"  # constant | poisson (seeded)
    duration_s: float = 10.0
    concurrency: int | None = None  # closed loop: requests kept in flight
    max_requests: int | None = None  # cap (default DEFAULT_MAX_REQUESTS)
    images: tuple[Path, ...] = ()
    files_per_request: int = 4  # batch endpoint only
    timeout_s: float = 10.0  # per request (connect, read, write, pool wait)
    seed: int = 0
    connections: int = 256  # open loop: connection pool size
    allow_remote: bool = False
    measure_ceiling: bool = True
    ceiling_s: float = 1.0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise InputError(f"--endpoint must be one of {', '.join(ENDPOINTS)}, got {self.endpoint!r}")
        if self.arrival not in ARRIVALS:
            raise InputError(f"--arrival must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}")
        if self.concurrency is not None and self.rate is not None:
            raise InputError("give either --rate (open loop) or --concurrency (closed loop), not both")
        if self.concurrency is None and self.rate is None:
            raise InputError("give --rate (open loop) or --concurrency (closed loop)")
        if self.rate is not None and not (0 < self.rate <= 1e6):
            raise InputError(f"--rate must be > 0 requests/s, got {self.rate}")
        if self.concurrency is not None and not (1 <= self.concurrency <= 10_000):
            raise InputError(f"--concurrency must be between 1 and 10000, got {self.concurrency}")
        if not (0 < self.duration_s <= MAX_DURATION_S):
            raise InputError(f"--duration must be > 0 and ≤ {MAX_DURATION_S:g} s, got {self.duration_s}")
        if self.max_requests is not None and self.max_requests < 1:
            raise InputError(f"--max-requests must be ≥ 1, got {self.max_requests}")
        if not (0 < self.timeout_s <= 600):
            raise InputError(f"--timeout must be > 0 and ≤ 600 s, got {self.timeout_s}")
        if self.files_per_request < 1:
            raise InputError(f"--batch-files must be ≥ 1, got {self.files_per_request}")
        if self.connections < 1:
            raise InputError(f"--connections must be ≥ 1, got {self.connections}")

    @property
    def mode(self) -> Literal["open", "closed"]:
        return "closed" if self.concurrency is not None else "open"

    @property
    def arrival_kind(self) -> Arrival:
        """``arrival`` as its literal type (``__post_init__`` checked it is one of ARRIVALS)."""
        return "poisson" if self.arrival == "poisson" else "constant"

    @property
    def cap(self) -> int:
        return self.max_requests if self.max_requests is not None else DEFAULT_MAX_REQUESTS


def check_target(url: str, allow_remote: bool = False) -> str:
    """The base URL without a trailing slash; InputError unless http(s) on a loopback address (or allowed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--url must look like http://127.0.0.1:8007, got {url!r}")
    if not allow_remote and not is_loopback(parts.hostname):
        raise InputError(
            f"{parts.hostname} is not a loopback address; load tests only target this machine "
            "unless --allow-remote is given"
        )
    return url.rstrip("/")


def is_loopback(host: str) -> bool:
    """Literal loopback addresses and ``localhost``; another ``*.localhost`` name only if it resolves to loopback.

    RFC 6761 reserves ``.localhost`` for loopback, but the resolver in use decides where a name goes (a hosts
    file or DNS server may map ``app.localhost`` anywhere), so such a name is resolved, and every address it
    resolves to must be loopback; so is ``localhost.`` (the absolute name, which goes to DNS, not the hosts
    file). No other name is resolved.
    """
    if host.lower() == "localhost":
        return True
    name = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    return (name == "localhost" or name.endswith(".localhost")) and _resolves_to_loopback(host.lower())


def _resolves_to_loopback(name: str) -> bool:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
