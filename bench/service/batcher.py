"""Dynamic batching: concurrent requests' images gathered into one inference call.

One consumer task takes the oldest waiting image, waits at most ``max_delay_s`` (from that image's arrival)
for up to ``max_batch - 1`` more, and runs the batch on a single inference thread; images that arrive
meanwhile form the next batch. It waits only while another request is on its way (announced with
:meth:`DynamicBatcher.incoming`: uploaded and being decoded), so a lone client never pays the delay and
the server never sits idle waiting for a slow client.
The queue is bounded: a submit that does not fit raises :class:`QueueFull`
(the service answers 503 + Retry-After), so overload never grows memory or latency without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np


class QueueFull(RuntimeError):
    """The inference queue cannot take these images now (backpressure)."""


@dataclass(frozen=True)
class Outcome:
    """One image's share of a batch: its probabilities and how its batch ran."""

    probs: np.ndarray
    batch_size: int
    queue_ms: float
    inference_ms: float


@dataclass
class _Item:
    tensor: np.ndarray
    future: asyncio.Future[Outcome]
    enqueued: float


class DynamicBatcher:
    """Gathers single images into batches of at most ``max_batch``; ``infer`` runs on ``executor``."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ):
        self.infer = infer
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_depth = on_depth
        self._pending: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: list[_Item] = []
        self._incoming = 0

    @property
    def depth(self) -> int:
        """Images waiting for inference (not counting the batch running now)."""
        return len(self._pending)

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bench-batcher")

    async def stop(self) -> None:
        """Stop the consumer; images still waiting fail (the server drains requests before calling this)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in [*self._running, *self._pending]:
            if not item.future.done():
                item.future.set_exception(RuntimeError("service shutting down"))
        self._pending.clear()
        self._running = []
        self._report_depth()

    def submit_many(self, tensors: Sequence[np.ndarray]) -> list[asyncio.Future[Outcome]]:
        """Queue images (all or none); each future resolves to that image's :class:`Outcome`."""
        if self._task is None or self._arrived is None:
            raise RuntimeError("batcher not started")
        if len(self._pending) + len(tensors) > self.max_queue:
            raise QueueFull(
                f"inference queue is full ({len(self._pending)} of {self.max_queue} images waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[Outcome]] = []
        for tensor in tensors:
            fut: asyncio.Future[Outcome] = loop.create_future()
            self._pending.append(_Item(tensor, fut, now))
            futures.append(fut)
        self._arrived.set()
        self._report_depth()
        return futures

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce a request that will submit soon (while it decodes), so a batch may wait for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._arrived is not None:
                self._arrived.set()  # a request that gave up must not keep the batcher waiting

    async def submit(self, tensor: np.ndarray) -> Outcome:
        return await self.submit_many([tensor])[0]

    def _report_depth(self) -> None:
        if self.on_depth is not None:
            self.on_depth(len(self._pending))

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if self.max_batch > 1 and self.max_delay_s > 0:
                deadline = self._pending[0].enqueued + self.max_delay_s
                while len(self._pending) < self.max_batch and self._incoming > 0:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), remaining)
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            batch = [item for item in batch if not item.future.done()]  # a cancelled request needs no answer
            self._report_depth()
            if not batch:
                continue
            started = time.perf_counter()
            self._running = batch
            try:
                stacked = np.stack([item.tensor for item in batch])
                probs = await loop.run_in_executor(self.executor, self.infer, stacked)
            except Exception as exc:  # the batch fails, the service does not
                self._running = []
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self._running = []  # kept on cancellation, so stop() can fail these requests
            inference_ms = (time.perf_counter() - started) * 1000
            if self.on_batch is not None:
                self.on_batch(len(batch), inference_ms / 1000)
            for i, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result(
                        Outcome(
                            probs=probs[i],
                            batch_size=len(batch),
                            queue_ms=(started - item.enqueued) * 1000,
                            inference_ms=inference_ms,
                        )
                    )
