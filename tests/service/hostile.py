"""Uploads that are cheap to send and costly to decode, made on the fly (never committed).

Used by the service tests (at sizes just over a small test budget) and by
``tests/benchmarks/service_hostile.py`` (at the sizes an attacker would send, 8000×8000).
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def webp_lossless(side: int) -> bytes:
    """A flat side×side lossless WebP: a few hundred bytes that decode to side² RGB pixels."""
    return _save(Image.new("RGB", (side, side), (40, 90, 160)), "WEBP", lossless=True, quality=0, method=0)


def png16(side: int) -> bytes:
    """A flat side×side 16-bit greyscale PNG at deflate's best ratio (about side² × 2 / 1032 bytes)."""
    raw = (b"\x00" + b"\x80\x00" * side) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def tiff32(side: int, mode: str = "F") -> bytes:
    """A flat side×side 32-bit (float ``F`` or integer ``I``) TIFF, deflate-compressed."""
    arr = np.full((side, side), 1000.5 if mode == "F" else 40_000, dtype=np.float32 if mode == "F" else np.int32)
    return _save(Image.fromarray(arr), "TIFF", compression="tiff_adobe_deflate")


def jpeg_header_patched(side: int, carried: int = 64) -> bytes:
    """A carried×carried JPEG whose frame header claims side×side: a few KB that libjpeg would fill up silently."""
    rng = np.random.default_rng(3)
    small = _save(Image.fromarray(rng.integers(0, 256, (carried, carried, 3), dtype=np.uint8)), "JPEG", quality=90)
    at = small.index(b"\xff\xc0")  # baseline frame header: FFC0 len(2) precision(1) height(2) width(2)
    patched = bytearray(small)
    struct.pack_into(">HH", patched, at + 5, side, side)
    return bytes(patched)


def png_short_idat(side: int, rows: int = 4) -> bytes:
    """A side×side RGB PNG whose image data stops after ``rows`` rows, followed by a well-formed IEND."""
    raw = (b"\x00" + b"\x55" * (3 * side)) * rows
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A smooth photo-like JPEG (what a camera sends), for checks that normal uploads still pass."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return _save(img, "JPEG", quality=90)


def bmp_rle8(width: int, height: int = 1) -> bytes:
    """A run-length coded (RLE8) BMP of width×height whose data is one end-of-line per row: ~1 KB for any size.

    Pillow decodes RLE in Python, holding the GIL: 16,777,216 × 1 cost 2.2 s of CPU and +320 MB.
    """
    data = b"\x00\x00" * height + b"\x00\x01"
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    head = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    return head + info + palette + data


def png_line(width: int) -> bytes:
    """A 1-pixel-high greyscale PNG ``width`` wide (deflate's best ratio): 16,777,216 wide is ~16 KB."""
    raw = b"\x00" + b"\x00" * width
    ihdr = struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw, 9))
        + _png_chunk(b"IEND", b"")
    )


def progressive_jpeg(side: int, seed: int = 0) -> bytes:
    """A smooth side×side progressive JPEG: drafting cannot shrink what decoding it costs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((side, side), Image.Resampling.BILINEAR)
    return _save(img, "JPEG", quality=75, progressive=True)


def multipart(data: bytes, name: str = "file", filename: str = "x", boundary: str = "hostileboundary") -> bytes:
    """A one-part multipart/form-data body (boundary ``boundary``)."""
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def post_head(path: str, length: int | None, boundary: str = "hostileboundary", host: str = "127.0.0.1") -> bytes:
    """A POST request head for a multipart body: Content-Length ``length``, or chunked when None."""
    size = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"{size}\r\n\r\n"
    ).encode()
