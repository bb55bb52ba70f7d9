"""``python -m bench ...`` in a fresh process: for the tests where exit codes, stdout and stderr are the contract.

One helper instead of a ``bench(...)`` per test file. The child gets this process's environment with
``BENCH_FAULTS`` cleared (a fault injected into the shell never leaks into a test; a test that wants one passes
it in ``env``), ``CUDA_VISIBLE_DEVICES=""`` with ``no_gpu`` (``cuda`` is then unavailable on any machine), then
the test's own ``env`` overrides.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psutil

BENCH = [sys.executable, "-m", "bench"]


def bench_env(env: dict[str, str] | None = None, no_gpu: bool = False) -> dict[str, str]:
    """The environment a bench child runs with (also for tests that start it with ``subprocess.Popen``)."""
    return {**os.environ, "BENCH_FAULTS": "", **({"CUDA_VISIBLE_DEVICES": ""} if no_gpu else {}), **(env or {})}


def run_bench(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    no_gpu: bool = False,
    prefix: Sequence[str] = BENCH,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bench *args`` (or ``*prefix *args``) to the end; stdout and stderr captured as text."""
    return subprocess.run(
        [*prefix, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=bench_env(env, no_gpu),
        check=False,
    )


def cell_processes_in(cwd: Path) -> list[psutil.Process]:
    """The ``bench._cell`` processes still running in ``cwd``: a stopped matrix must leave none behind."""
    alive = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "bench._cell" in " ".join(proc.info["cmdline"] or []) and Path(proc.cwd()) == cwd:
                alive.append(proc)
        except (psutil.Error, OSError):
            continue
    return alive
