"""Console output: tables on stdout, logs and progress on stderr (so ``--json`` keeps stdout clean)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from bench.results import CellResult


def log(message: str) -> None:
    """One line of progress or information, on stderr."""
    click.echo(message, err=True)


def fmt(value: Any, digits: int = 2) -> str:
    """Numbers formatted the same everywhere (console, Markdown, both languages); None → "—"."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def cells_table(cells: Sequence[CellResult], title: str | None = None) -> Any:
    """A rich Table of cells (status, latency percentiles, throughput, memory, accuracy); reasons as a caption."""
    from rich.table import Table

    reasons = [f"{c.variant}/{c.provider}/b{c.batch_size}: {c.reason}" for c in cells if c.reason]
    table = Table(title=title, caption="\n".join(reasons) or None, caption_justify="left")
    for name in ("variant", "provider", "batch", "status", "create ms", "p50 ms", "p95 ms", "p99 ms",
                 "mean±std ms", "img/s", "RSS peak MB", "GPU peak MB", "accuracy"):
        table.add_column(name, justify="left" if name in ("variant", "provider", "status") else "right")
    for c in cells:
        lat = c.latency_ms or {}
        mem = c.memory or {}
        acc = (c.accuracy or {}).get("accuracy")
        table.add_row(
            c.variant, c.provider, str(c.batch_size), c.status,
            fmt(c.session_create_ms, 1), fmt(lat.get("p50"), 3), fmt(lat.get("p95"), 3), fmt(lat.get("p99"), 3),
            f"{fmt(lat.get('mean'), 3)}±{fmt(lat.get('std'), 3)}" if lat else "—",
            fmt(c.throughput_ips, 1), fmt(mem.get("rss_peak_mb"), 1), fmt(mem.get("gpu_device_peak_mb"), 1),
            "—" if acc is None else f"{acc * 100:.2f}%",
        )
    return table


def print_table(table: Any) -> None:
    import shutil

    from rich.console import Console

    Console(file=sys.stdout, width=max(150, shutil.get_terminal_size((150, 24)).columns)).print(table)


@contextmanager
def cell_progress(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[int], None]] | None]:
    """Progress for timed loops on stderr (terminals only): yields ``start(label, total) -> advance(n)``."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(file=sys.stderr), transient=True) as bar:
        def start(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n=1: bar.advance(task, n)

        yield start
