"""Request bodies, multipart-encoded once before the run and re-sent as is (no encoding on the hot path)."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import InputError
from bench.load.spec import ENDPOINTS

MAX_PAYLOADS = 256  # distinct pre-encoded bodies kept in memory (images are cycled)


@dataclass(frozen=True)
class Payload:
    """One request body, multipart-encoded once up front and re-sent as is."""

    body: bytes
    content_type: str | None
    files: int


def encode_multipart(field_name: str, files: Sequence[tuple[str, bytes, str]], boundary: str) -> bytes:
    """multipart/form-data with one part per (filename, content, content type), all under ``field_name``."""
    out = bytearray()
    for filename, content, ctype in files:
        safe = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{field_name}"; filename="{safe}"\r\n'.encode()
        out += f"Content-Type: {ctype}\r\n\r\n".encode()
        out += content
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def build_payloads(
    endpoint: str, images: Sequence[Path], files_per_request: int = 4, limit: int = MAX_PAYLOADS, seed: int = 0
) -> list[Payload]:
    """Bodies for ``endpoint``: one image per body (detect), ``files_per_request`` (batch), none (health).

    At most ``limit`` bodies are kept; with more images, evenly spaced ones are used. Requests cycle
    through the bodies in order.
    """
    _, _, field_name = ENDPOINTS[endpoint]
    if field_name is None:
        return [Payload(b"", None, 0)]
    if not images:
        raise InputError("no images to send: --images names a folder without image files")
    paths = list(images)
    if len(paths) > limit:
        paths = [paths[int(i * len(paths) / limit)] for i in range(limit)]
    per = files_per_request if endpoint == "batch" else 1
    cache: dict[Path, bytes] = {}

    def read(p: Path) -> bytes:
        if p not in cache:
            try:
                cache[p] = p.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read image {p}: {exc.strerror or exc}") from exc
        return cache[p]

    boundary = f"bench-load-{seed:08x}-{os.getpid():x}"
    ctype = f"multipart/form-data; boundary={boundary}"
    payloads = []
    for k in range(len(paths)):
        chosen = [paths[(k * per + j) % len(paths)] for j in range(per)]
        parts = [(p.name, read(p), mimetypes.guess_type(p.name)[0] or "application/octet-stream") for p in chosen]
        payloads.append(Payload(encode_multipart(field_name, parts, boundary), ctype, per))
    return payloads
