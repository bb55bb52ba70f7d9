"""Options and output steps several commands share. Light on purpose: ``--help`` of any command imports it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bench.console import log
from bench.errors import CellNotRun

if TYPE_CHECKING:
    from bench.results import RunResult

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

model_dir_option = click.option(
    "--model-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Model folder (onnx/model*.onnx + config.json) or a folder of .onnx files. "
    "Default: $BENCH_MODEL_DIR, ./variants/demo, then the bundled demo.",
)
no_build_option = click.option("--no-build", is_flag=True, help="Never build a missing variant; fail instead (exit 2).")
provider_option = click.option(
    "--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (or a comma list)."
)
perturb_option = click.option(
    "--perturb",
    "perturb",
    multiple=True,
    help="Also evaluate under perturbations (repeatable): standard, extended, jpeg:Q, resize:F, blur:SIGMA, "
    "noise:SIGMA, crop:F, webp:Q, reshare:N, screenshot, comma lists (jpeg:90,70) or combinations "
    "(jpeg:50+resize:0.5); clean is always included.",
)


def json_option(what: str) -> Decorator:
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout, nothing else.")


def out_option(help_text: str = "Write results.json + results.csv here.") -> Decorator:
    return click.option("--out", type=click.Path(path_type=Path), default=None, help=help_text)


def emit_json(document: str) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(document)


def finish_cells(
    result: RunResult, out: Path | None, as_json: bool, show: Callable[[], None], prefix_cells: bool = True
) -> None:
    """Write results (--out), print JSON or the table, and exit 3 when a requested cell did not run."""
    if out is not None:
        json_path, _ = result.write(out)
        log(f"wrote {json_path} and results.csv")
    if as_json:
        emit_json(result.to_json())
    else:
        show()
    not_run = [c for c in result.cells if c.status != "ok"]
    if not_run:
        raise CellNotRun(
            "; ".join((f"{c.variant}/{c.provider}: " if prefix_cells else "") + (c.reason or c.status) for c in not_run)
        )


def split_names(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; empty or None → None (every one)."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None
