"""What ``bench`` shows a person: tables on stdout, logs and progress on stderr (so ``--json`` keeps stdout clean).

The views live here so the CLI only parses options, calls the library and prints. rich is imported inside
the functions that draw, so ``bench --help`` does not pay for it.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.formatting import fmt
from bench.noise import noisy_figure
from bench.results import CellResult

NOISY_MARK = "⚠"  # after a cell's status: measured on a busy machine (the caption says why)

__all__ = [
    "accuracy_table",
    "build_table",
    "cell_progress",
    "cells_table",
    "check_table",
    "fmt",
    "footnotes",
    "log",
    "print_environment",
    "print_table",
    "variants_table",
]

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.table import Table

    from bench.variants import BuildResult, CheckReport, VariantInfo


def log(message: str) -> None:
    """One line of progress or information, on stderr."""
    click.echo(message, err=True)


def cells_table(cells: Sequence[CellResult], title: str | None = None) -> Table:
    """A rich Table of cells (status, latency percentiles, throughput, memory, accuracy); reasons as a caption.

    A cell measured while other processes used the CPU (or its threads had to share cores with them, or the GPU's
    clocks moved) has ⚠ after its status and a caption line saying why: its figures should decide nothing.
    """
    from rich.markup import escape  # reasons carry text like bench[torch] that rich would read as markup
    from rich.table import Table

    reasons = [escape(f"{c.variant}/{c.provider}/b{c.batch_size}: {c.reason}") for c in cells if c.reason]
    noisy = {id(c): why for c in cells if c.status == "ok" and (why := noisy_figure(c))}
    reasons += [
        escape(f"{NOISY_MARK} {c.variant}/{c.provider}/b{c.batch_size}: noisy — {noisy[id(c)]}")
        for c in cells
        if id(c) in noisy
    ]
    table = Table(title=title, caption="\n".join(reasons) or None, caption_justify="left")
    for name in (
        "variant",
        "provider",
        "batch",
        "status",
        "create ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean±std ms",
        "img/s",
        "RSS peak MB",
        "GPU peak MB",
        "accuracy",
    ):
        table.add_column(name, justify="left" if name in ("variant", "provider", "status") else "right")
    for c in cells:
        lat = c.latency_ms or {}
        mem = c.memory or {}
        acc = (c.accuracy or {}).get("accuracy")
        table.add_row(
            c.variant,
            c.provider,
            str(c.batch_size),
            f"{c.status} {NOISY_MARK}" if id(c) in noisy else c.status,
            fmt(c.session_create_ms, 1),
            fmt(lat.get("p50"), 3),
            fmt(lat.get("p95"), 3),
            fmt(lat.get("p99"), 3),
            f"{fmt(lat.get('mean'), 3)}±{fmt(lat.get('std'), 3)}" if lat else "—",
            fmt(c.throughput_ips, 1),
            fmt(mem.get("rss_peak_mb"), 1),
            fmt(mem.get("gpu_device_peak_mb"), 1),
            _pct(acc, (c.accuracy or {}).get("accuracy_ci")),
        )
    return table


def print_table(table: Table) -> None:
    """A table on stdout, at least 150 columns wide so the figures never wrap."""
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

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        auto_refresh=False,  # no drawing thread: the bar redraws only when told, i.e. between replicates
    ) as bar:

        def start(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            bar.refresh()

            def advance(n: int = 1) -> None:
                bar.advance(task, n)
                bar.refresh()

            return advance

        yield start


def print_environment(env: dict[str, Any], version: str) -> None:
    """``bench info``: versions, CPU, GPU, CUDA libraries, then one row per provider (usable or why not)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(
        f"[bold]bench {version}[/] · onnxruntime {env['onnxruntime']} "
        f"({env['onnxruntime_build']} build) · "
        f"python {env['python']} · onnx {env['onnx']} · numpy {env['numpy']}"
    )
    cpu = env["cpu"]
    console.print(
        f"CPU: {cpu['model']} · {cpu['cores_physical']} cores / {cpu['cores_logical']} threads · "
        f"RAM {env['memory_total_mb']:,} MB · machine id {env['machine_id']}"
    )
    gpu = env["gpu"]
    console.print(
        f"GPU: {gpu['name']} · driver {gpu['driver']} · CUDA {gpu['cuda']} · {gpu['memory_total_mb']:,} MB"
        if gpu
        else f"GPU: none — {env['gpu_reason']}"
    )
    libs = env["cuda_libraries"]
    console.print("CUDA libraries: " + ", ".join(f"{k} {'found' if v else 'missing'}" for k, v in libs.items()))
    table = Table("provider", "usable", "execution provider / reason")
    for name, state in env["providers"].items():
        table.add_row(name, "yes" if state["usable"] else "no", state["reason"] or state["execution_provider"])
    console.print(table)


def _table(title: str, columns: Sequence[tuple[str, JustifyMethod]]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def variants_table(infos: Sequence[VariantInfo], title: str) -> Table:
    """``bench variants list``: one row per variant file."""
    table = _table(
        title,
        [
            ("variant", "left"),
            ("file", "left"),
            ("size MB", "right"),
            ("precision", "left"),
            ("quant ops", "left"),
            ("params", "right"),
            ("sha256", "left"),
            ("recipe", "left"),
        ],
    )
    for i in infos:
        table.add_row(
            i.variant,
            i.file,
            fmt(i.size_mb, 1 if i.size_mb >= 10 else 3),
            i.precision,
            ", ".join(f"{k}×{v}" for k, v in i.quant_ops.items()) or "—",
            fmt(i.parameters),
            i.sha256[:12],
            (i.recipe or {}).get("summary", "—") if isinstance(i.recipe, dict) else "—",
        )
    return table


def build_table(results: Sequence[BuildResult], title: str) -> Table:
    """``bench variants build``: what happened to each recipe (built, exists, skipped) and how long it took."""
    table = _table(
        title,
        [
            ("variant", "left"),
            ("status", "left"),
            ("file", "left"),
            ("size MB", "right"),
            ("seconds", "right"),
            ("note", "left"),
        ],
    )
    for r in results:
        size = fmt(r.size_mb, 1 if (r.size_mb or 0) >= 10 else 3)
        table.add_row(r.variant, r.status, Path(r.path).name, size, fmt(r.seconds, 1), r.reason or "")
    return table


def check_table(report: CheckReport, title: str) -> Table:
    """``bench variants check``: each variant's drift from the reference, its tolerance and the verdict."""
    table = _table(
        title,
        [
            ("variant", "left"),
            ("max |Δlogit|", "right"),
            ("max |Δprob|", "right"),
            ("mean |Δprob|", "right"),
            ("agreement", "right"),
            ("tolerance", "left"),
            ("verdict", "left"),
        ],
    )
    for v in report.variants:
        tol = (
            ", ".join(
                f"{k.replace('max_abs_', '').replace('min_', '')} {val:g}"
                for k, val in v.tolerance.items()
                if val is not None
            )
            or "—"
        )
        verdict = f"{v.status}: {v.reason}"
        if v.status == "ok":
            verdict = "✅ ok" if v.within_tolerance else f"❌ {v.why}"
        table.add_row(
            v.variant,
            fmt(v.max_abs_dlogit, 4),
            fmt(v.max_abs_dprob, 4),
            fmt(v.mean_abs_dprob, 4),
            "—" if v.agreement is None else f"{v.agreement * 100:.1f}%",
            tol,
            verdict,
        )
    return table


def accuracy_table(cells: Sequence[CellResult], title: str | None = None) -> Table:
    """A rich Table: one row per cell with the headline accuracy figures, agreement and images/s."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for name in (
        "variant",
        "provider",
        "n",
        "skipped",
        "accuracy",
        "bal. acc",
        "F1",
        "AUC",
        "EER",
        "log loss",
        "ECE",
        "flip rate",
        "mean |Δp|",
        "img/s",
    ):
        table.add_column(name, justify="left" if name in ("variant", "provider") else "right")
    for c in cells:
        a = c.accuracy or {}
        if c.status != "ok":
            table.add_row(c.variant, c.provider, f"[red]{c.status}[/]: {escape(c.reason or '')}", *[""] * 11)
            continue
        agree = a.get("agreement") or {}
        table.add_row(
            c.variant,
            c.provider,
            fmt(a.get("n")),
            fmt(len(a.get("skipped") or [])),
            _pct(a.get("accuracy"), a.get("accuracy_ci")),
            _pct(a.get("balanced_accuracy"), a.get("balanced_accuracy_ci")),
            fmt(a.get("f1"), 4),
            _with_ci(fmt(a.get("roc_auc"), 4), a.get("roc_auc_ci"), 3),
            _pct(a.get("eer")),
            fmt(a.get("log_loss"), 4),
            fmt(a.get("ece"), 4),
            _pct(agree.get("flip_rate")),
            fmt(agree.get("mean_abs_dp"), 4),
            fmt(a.get("images_per_s"), 1),
        )
    return table


def robustness_table(cells: Sequence[CellResult], title: str | None = None) -> Table:
    """A rich Table: one row per cell × perturbation (clean first), its figures and the changes they cause."""
    from rich.table import Table

    table = Table(title=title)
    heads: tuple[str, ...] = ("variant", "provider", "perturbation", "accuracy", "bal. acc", "AUC", "AP", "EER", "ECE")
    heads += ("ΔAUC pt", "Δacc pt", "flips vs clean", "flips vs ref", "max |Δp| vs ref")
    for name in heads:
        table.add_column(name, justify="left" if name in ("variant", "provider", "perturbation") else "right")

    def pt(v: float | None) -> str:
        return "—" if v is None else f"{v * 100:+.2f}"

    for c in cells:
        a = c.accuracy or {}
        if c.status != "ok" or not a:
            continue
        entries: list[Mapping[str, Any]] = [{**a, "perturbation": "clean"}, *(a.get("perturbations") or [])]
        for entry in entries:
            vs, agree = entry.get("vs_clean") or {}, entry.get("agreement") or {}
            table.add_row(
                c.variant,
                c.provider,
                entry["perturbation"],
                _pct(entry.get("accuracy")),
                _pct(entry.get("balanced_accuracy")),
                fmt(entry.get("roc_auc"), 4),
                fmt(entry.get("average_precision"), 4),
                _pct(entry.get("eer")),
                fmt(entry.get("ece"), 4),
                pt(vs.get("delta_roc_auc")),
                pt(vs.get("delta_accuracy")),
                _pct(vs.get("flip_rate")),
                _pct(agree.get("flip_rate")),
                fmt(agree.get("max_abs_dp"), 4),
            )
    return table


def _with_ci(text: str, ci: Sequence[float] | None, digits: int) -> str:
    """``text`` followed by its 95 % interval, when the result has one (``<metric>_ci``)."""
    if not ci or len(ci) != 2 or text == "—":
        return text
    return f"{text} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def _pct(value: float | None, ci: Sequence[float] | None = None) -> str:
    """A fraction as a percentage, with its interval in percent when given."""
    if value is None:
        return "—"
    scaled = [v * 100 for v in ci] if ci and len(ci) == 2 and None not in ci else None
    return _with_ci(f"{value * 100:.2f}%", scaled, 2)


def footnotes(cells: Sequence[CellResult]) -> list[str]:
    """Lines under the table: the reference and decision rule, why figures are missing, what was skipped."""
    lines: list[str] = []
    why_cells: dict[str, tuple[dict[str, None], dict[str, None]]] = {}  # reason → (fields, cells), ordered
    for c in cells:
        a = c.accuracy or {}
        agree = a.get("agreement")
        if agree and not any(line.startswith("agreement vs") for line in lines):
            lines.append(
                f"agreement vs {agree['reference']} (same provider when evaluated there); "
                f"positive class: {a.get('positive_label')}, threshold p(fake) ≥ {a.get('threshold')}"
            )
        for field_name, why in (a.get("reasons") or {}).items():
            fields, where = why_cells.setdefault(why, ({}, {}))
            fields[field_name] = None
            where[f"{c.variant}/{c.provider}"] = None
    for why, (fields, where) in why_cells.items():
        lines.append(f"— {', '.join(fields)} null: {why} ({', '.join(where)})")
    first = next((c.accuracy for c in cells if c.accuracy and c.accuracy.get("skipped")), None)
    if first:
        skipped = first["skipped"]
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        lines.append(f"skipped {len(skipped)}: {shown}" + (" …" if len(skipped) > 5 else ""))
    return lines
