"""Uploads → tensors within a decode budget, on a bounded pool that no single request can fill.

Decoding is where a cheap upload becomes expensive: a few bytes can claim 8000×8000 pixels. So every
upload is first planned from its header alone (format, size it decodes at, enough data for that size),
refused beyond ``--max-pixels`` per image and ``--max-batch-pixels`` per request, and only then decoded at
the smallest size the model needs (``bench.preprocess.decode_image(fit=...)``). Decoding runs on a fixed
thread pool; one request holds at most all workers but one, so a normal /detect never queues behind a
hostile batch.

Some decoders are slow inside the pixel budget, and are refused (415) from the header: BMP run-length
coding (Pillow decodes it in Python, holding the GIL for every thread) and extreme aspect ratios (a
1 × 16,777,216 PNG costs seconds in per-row overhead). A progressive JPEG is counted at its stored size:
its coefficients are all kept, at full size, whatever scale it is drafted to.

Uploads whose decode costs little (``CHEAP_PIXELS``, what a photo drafted near the model's size costs)
have their own worker, so a normal /detect never waits behind queued costly decodes; costly decodes
queue on the others, bounded by their cost in pixels (``DecodePool.admit``), not by their number.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import numpy as np

from bench.preprocess import DecodePlan, ImageError, PreprocessConfig, decode_image, plan_decode, to_tensor

T = TypeVar("T")
_IMAGE_ERRORS = {  # ImageError.kind → (status, error code)
    "unsupported": (415, "unsupported_media_type"),
    "corrupt": (400, "bad_image"),
    "too_large": (413, "image_too_large"),
}
# Longest side over shortest side beyond which an upload is refused (panoramas are ~10:1).
MAX_ASPECT_RATIO = 64
# Decode cost (pixels) that goes to the cheap lane: a 12 MP photo drafted to twice a 512 px model input.
CHEAP_PIXELS = 1024 * 1024
_BMP_RLE = {1: "RLE8", 2: "RLE4"}  # BMP compression codes Pillow decodes in Python
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
log = logging.getLogger("bench.service")


@dataclass
class Prepared:
    """One upload turned into a tensor, or the error it earned."""

    tensor: np.ndarray | None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    status: int = 200
    error: str | None = None
    detail: str | None = None
    plan: DecodePlan | None = None
    cost_pixels: int = 0  # what decoding it costs, in pixels (a progressive JPEG: its stored size)

    @classmethod
    def failed(cls, status: int, error: str, detail: str) -> Prepared:
        return cls(None, status=status, error=error, detail=detail)


def read_upload(stream: BinaryIO) -> bytes:
    stream.seek(0)
    return stream.read()


def plan_uploads(streams: Sequence[BinaryIO], preprocess: PreprocessConfig, max_pixels: int) -> list[Prepared]:
    """The decode plan of each upload (one pool job for a whole request: headers only, quick)."""
    return [plan_upload(read_upload(stream), preprocess, max_pixels) for stream in streams]


def plan_upload(data: bytes, preprocess: PreprocessConfig, max_pixels: int) -> Prepared:
    """Header-only: the decode plan of an upload, or its 400/413/415 (nothing decoded yet)."""
    try:
        plan = plan_decode(data, fit=_fit(preprocess), max_pixels=max_pixels)
        cost = decode_cost(data, plan)
    except ImageError as exc:
        return _image_error(exc)
    except Exception:  # a parser bug on hostile input is still the input's fault: 400, the server lives
        log.warning("header of an upload did not parse", exc_info=True)
        return Prepared.failed(400, "bad_image", "image header does not parse")
    if isinstance(cost, Prepared):
        return cost
    if cost > max_pixels:
        w, h = plan.size
        return Prepared.failed(
            413,
            "image_too_large",
            f"image too large: a progressive JPEG of {w}x{h} pixels is decoded at its full size, over the decode "
            f"limit of {max_pixels:,} pixels (--max-pixels)",
        )
    return Prepared(None, plan=plan, cost_pixels=cost)


def decode_cost(data: bytes, plan: DecodePlan) -> int | Prepared:
    """The pixels decoding ``data`` costs, or the 415 of a format whose decoder is slow inside any budget."""
    w, h = plan.size
    if max(w, h) > MAX_ASPECT_RATIO * max(1, min(w, h)):
        return Prepared.failed(
            415,
            "unsupported_media_type",
            f"image of {w}x{h} pixels: aspect ratio over {MAX_ASPECT_RATIO}:1 is not accepted",
        )
    if plan.format not in ("BMP", "JPEG"):
        return plan.decode_pixels
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        info = dict(img.info)
    if plan.format == "BMP" and info.get("compression") in _BMP_RLE:
        return Prepared.failed(
            415,
            "unsupported_media_type",
            f"run-length coded BMP ({_BMP_RLE[info['compression']]}) is not accepted; send PNG or uncompressed BMP",
        )
    if plan.format == "JPEG" and (info.get("progressive") or info.get("progression")):
        return w * h
    return plan.decode_pixels


def decode_upload(data: bytes, preprocess: PreprocessConfig, max_pixels: int, request_id: str | None) -> Prepared:
    """Decode (at reduced size) and preprocess one upload; an error is an answer, never an exception."""
    t0 = time.perf_counter()
    try:
        image = decode_image(data, fit=_fit(preprocess), max_pixels=max_pixels)
    except ImageError as exc:
        return _image_error(exc)
    except Exception:  # details for the operator, not the client (they may name internals)
        log.warning("request %s: an upload did not decode", request_id, exc_info=True)
        return Prepared.failed(400, "bad_image", "image does not decode")
    t1 = time.perf_counter()
    tensor = to_tensor(image, preprocess)
    t2 = time.perf_counter()
    return Prepared(tensor, decode_ms=(t1 - t0) * 1000, preprocess_ms=(t2 - t1) * 1000)


def _fit(preprocess: PreprocessConfig) -> tuple[int, int]:
    return (preprocess.height, preprocess.width)


def _image_error(exc: ImageError) -> Prepared:
    status, error = _IMAGE_ERRORS.get(exc.kind, (400, "bad_image"))
    return Prepared.failed(status, error, str(exc))


class DecodePool:
    """Decode threads: ``workers`` for costly uploads, one more for cheap ones; each request runs at most
    ``per_request`` costly uploads at once, and costly decodes admitted but not done cost ``max_queued_pixels``
    at most (:meth:`admit`)."""

    def __init__(self, workers: int, max_queued_pixels: int | None = None):
        self.workers = workers
        self.per_request = max(1, workers - 1)  # one worker always left for the next request
        self.max_queued_pixels = max_queued_pixels
        self.queued_pixels = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="bench-decode")
        self._cheap = ThreadPoolExecutor(1, thread_name_prefix="bench-decode-cheap")

    async def run(self, fn: Callable[..., T], *args: object, cost: int = 0) -> T:
        """``fn(*args)`` on a decode thread: the cheap lane for a cost up to CHEAP_PIXELS (headers: cost 0)."""
        executor = self._cheap if cost <= CHEAP_PIXELS else self._executor
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    @contextlib.contextmanager
    def admit(self, pixels: int) -> Iterator[bool]:
        """Whether ``pixels`` more of costly decoding fit the queue (held until the block ends)."""
        costly = pixels if pixels > CHEAP_PIXELS else 0
        if costly and self.max_queued_pixels is not None and self.queued_pixels + costly > self.max_queued_pixels:
            yield False
            return
        self.queued_pixels += costly
        try:
            yield True
        finally:
            self.queued_pixels -= costly

    async def map(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run one request's jobs, ``per_request`` at a time, results in order."""
        gate = asyncio.Semaphore(self.per_request)

        async def gated(job: Callable[[], Awaitable[T]]) -> T:
            async with gate:
                return await job()

        return list(await asyncio.gather(*(gated(job) for job in jobs)))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._cheap.shutdown(wait=False, cancel_futures=True)


def trim_memory() -> bool:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim(0)``, every arena); False off glibc.

    Many concurrent uploads leave the heap at its high-water mark after they are freed (+277 MB idle after
    300 concurrent 1 MB uploads): the chunks are free but the pages stay mapped until trimmed.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return bool(ctypes.CDLL(None).malloc_trim(0))
    return False


def return_freed_memory_to_os() -> bool:
    """Make glibc give large freed buffers back to the OS at once (decoded images, not heap fragments).

    glibc raises its mmap threshold after the first large free, so later image buffers come from the
    heap and stay in the process's RSS after they are freed (855 MB idle after hostile uploads); a fixed
    threshold keeps every buffer above it in its own mapping, returned on free. No-op off glibc.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))  # libc is in the process
    return False
