"""Uploads → tensors within a decode budget, on a bounded pool that no single request can fill.

Decoding is where a cheap upload becomes expensive: a few bytes can claim 8000×8000 pixels. So every
upload is first planned from its header alone (format, size it decodes at, enough data for that size),
refused beyond ``--max-pixels`` per image and ``--max-batch-pixels`` per request, and only then decoded at
the smallest size the model needs (``bench.preprocess.decode_image(fit=...)``). Decoding runs on a fixed
thread pool; one request holds at most all workers but one, so a normal /detect never queues behind a
hostile batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
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
        return Prepared(None, plan=plan_decode(data, fit=_fit(preprocess), max_pixels=max_pixels))
    except ImageError as exc:
        return _image_error(exc)
    except Exception:  # a parser bug on hostile input is still the input's fault: 400, the server lives
        log.warning("header of an upload did not parse", exc_info=True)
        return Prepared.failed(400, "bad_image", "image header does not parse")


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
    """A fixed pool of decode threads; each request runs at most ``per_request`` of its uploads at once."""

    def __init__(self, workers: int):
        self.workers = workers
        self.per_request = max(1, workers - 1)  # one worker always left for the next request
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="bench-decode")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def map(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run one request's jobs, ``per_request`` at a time, results in order."""
        gate = asyncio.Semaphore(self.per_request)

        async def gated(job: Callable[[], Awaitable[T]]) -> T:
            async with gate:
                return await job()

        return list(await asyncio.gather(*(gated(job) for job in jobs)))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def return_freed_memory_to_os() -> bool:
    """Make glibc give large freed buffers back to the OS at once (decoded images, not heap fragments).

    glibc raises its mmap threshold after the first large free, so later image buffers come from the
    heap and stay in the process's RSS after they are freed (855 MB idle after hostile uploads); a fixed
    threshold keeps every buffer above it in its own mapping, returned on free. No-op off glibc.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))  # libc is in the process
    return False
