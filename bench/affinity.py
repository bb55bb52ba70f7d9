"""CPU pinning for a served model and the load generator that measures it (``--cpus``, ``--load-cpus``).

On a small machine the two trade cores: the generator's event loop, the server's request threads and ORT's
intra-op pool all migrate between the same CPUs, and a find-max search reads whichever of them the scheduler
favoured that minute (the demo's max rate 225–375 req/s unpinned over three runs, 300–350 with the server on
one CPU and the generator on the other: docs/measurements/maxrate-pinned-probe.json). Giving each its own CPUs
is the client/server separation load-testing tools ask for (Triton's perf_analyzer and NVIDIA AIPerf run the
client apart from the server). Linux only (``sched_setaffinity``); every thread of the process is moved, as
``taskset -a`` does, because a running process already has threads (asyncio, ORT pools) a call on the main
thread alone would leave behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

from bench.errors import InputError


def available_cpus() -> tuple[int, ...] | None:
    """The CPUs this process may run on; None where the OS cannot say (no ``sched_getaffinity``)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return tuple(sorted(os.sched_getaffinity(0)))


def parse_cpus(text: str, flag: str = "--cpus") -> tuple[int, ...]:
    """``"1"``, ``"0,2"``, ``"2-3"`` → the CPU numbers, checked against those this process may use."""
    allowed = available_cpus()
    if allowed is None:
        raise InputError(f"{flag} needs Linux (os.sched_setaffinity): drop {flag} on this system")
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise InputError(f"{flag} {text!r}: give CPU numbers as taskset does, e.g. 1 or 0,2 or 2-3") from None
        if first < 0 or last < first:
            raise InputError(f"{flag} {text!r}: {part!r} is not a CPU number or an increasing range")
        cpus.update(range(first, last + 1))
    missing = sorted(cpus - set(allowed))
    if missing:
        raise InputError(
            f"{flag} {text!r}: CPU {', '.join(map(str, missing))} is not available to this process "
            f"(it may use {_ranges(allowed)})"
        )
    return tuple(sorted(cpus))


def pin_process(cpus: tuple[int, ...]) -> tuple[int, ...]:
    """Move every thread of this process (and the threads it starts later) to ``cpus``; the CPUs it had."""
    before = available_cpus() or ()
    for tid in _threads():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)
    return before


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """This process on ``cpus`` for the block (nothing when None), then back where it was."""
    if cpus is None:
        yield
        return
    before = pin_process(cpus)
    try:
        yield
    finally:
        pin_process(before)


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def _ranges(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) → "0-2,5": consecutive numbers share ``number - position``."""
    runs = [[c for _, c in run] for _, run in itertools.groupby(enumerate(cpus), lambda ic: ic[1] - ic[0])]
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


__all__ = ["available_cpus", "parse_cpus", "pin_process", "pinned"]
