"""The ``bench`` command: a lazy click group whose subcommands live in one module per command group.

``bench --help`` imports none of them (each command's one-line summary is listed here, and a test keeps it
equal to the command's own); ``bench run`` imports only ``bench.cli.measuring``. The modules parse options
(derived from the settings declared on the config dataclasses, bench.cli.options), call the library and
print; measuring logic and business defaults live in the library.
"""

from __future__ import annotations

import importlib
import os
import textwrap
from pathlib import Path
from typing import Any

import click

from bench import __version__
from bench.errors import BenchError

ISSUES_URL = "the bench issue tracker"

# command → (module, attribute, one-line summary shown by `bench --help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ab": (
        "bench.cli.gate",
        "ab",
        "Measure two model folders (or two variants) alternately in one job, then compare.",
    ),
    "audit": (
        "bench.cli.audit",
        "audit",
        "Shortcut audit: a metadata-only classifier (format, size, JPEG quality, EXIF …) on a labelled set.",
    ),
    "calibrate": (
        "bench.cli.measuring",
        "calibrate",
        "A/A gates of one model on this machine: false-alarm rate, MDE, replicates needed for a target MDE.",
    ),
    "compare": (
        "bench.cli.gate",
        "compare",
        "Verdicts between two results files (or folders holding results.json): BASELINE vs CURRENT.",
    ),
    "eval": (
        "bench.cli.accuracy",
        "eval_",
        "Accuracy of one or more variants on a labelled set (+ agreement with a reference variant).",
    ),
    "history": (
        "bench.cli.history",
        "history",
        "Keep every run (SQLite or PostgreSQL), find change points over them, draw the trends.",
    ),
    "info": (
        "bench.cli.info",
        "info",
        "Environment fingerprint and which providers are usable here, with the reason when not.",
    ),
    "load": (
        "bench.cli.service",
        "load",
        "Load test a running detect service: open loop at a fixed rate (default) or closed loop.",
    ),
    "matrix": (
        "bench.cli.release",
        "matrix",
        "Variants × providers × batch sizes, each cell in its own process; results, report and plots.",
    ),
    "profile": (
        "bench.cli.profile",
        "profile",
        "Where the time goes: per op type and per node (ORT's profiler), FLOPs, GFLOP/s and fraction of peak.",
    ),
    "report": (
        "bench.cli.release",
        "report",
        "(Re)render report.md / report.th.md and plots/*.png from DIR/results.json, without measuring.",
    ),
    "run": (
        "bench.cli.measuring",
        "run",
        "Measure one cell: a variant on a provider at one batch size (latency, throughput, memory).",
    ),
    "schema": (
        "bench.cli.info",
        "schema",
        "Print the JSON Schema of a results file (results.json) or of `bench compare --json` output.",
    ),
    "serve": (
        "bench.cli.service",
        "serve",
        "Reference detect service: /health, /health/live, /health/ready, /detect, /detect/batch, /metrics.",
    ),
    "variants": (
        "bench.cli.variants",
        "variants",
        "List, build and verify a model's variants (fp32, fp16, int8, uint8, q4, q4f16, bnb4).",
    ),
}


class BenchGroup(click.Group):
    """Loads a subcommand's module only when it runs; turns BenchError into one line on stderr + its exit
    code, anything unexpected into exit 4."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _summary = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), f"{module}.{attribute} is not a click command"
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The summaries of COMMANDS, shortened as click would, without importing a command module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = [(n, _shorten(COMMANDS[n][2], limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            # 130 = 128 + SIGINT, the shell's convention; 1 is reserved for failed verdicts (CLI.md)
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except click.UsageError as exc:  # a bad flag: one line, as every other input error, exit 2
            where = exc.ctx.command_path if exc.ctx is not None else "bench"
            click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # internal error: one line, where to report, exit 4
            click.echo(
                f"internal error: {type(exc).__name__}: {exc} (at {_where(exc)}); please report it to {ISSUES_URL} "
                "with the command line (BENCH_DEBUG=1 shows the traceback)",
                err=True,
            )
            if os.environ.get("BENCH_DEBUG") == "1":
                raise
            ctx.exit(4)


def _shorten(text: str, limit: int) -> str:
    """As click shortens a command's help in a listing."""
    if len(text) <= limit:
        return text
    return textwrap.shorten(text, max(limit, 3), placeholder="...", break_on_hyphens=False)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="bench")
def main() -> None:
    """Benchmark and evaluate ONNX image-classifier variants across CPU, CUDA and TensorRT.

    \b
    Quick start (bundled demo model and demo labelled set, no download):
      bench info                         environment and usable providers
      bench run                          fp32 on cpu, latency + memory
      bench run --variant fp16 --provider cuda --json
      bench eval --variant all           accuracy of every variant
      bench matrix --out reports/rc1     variants × providers × batch sizes + report

    Exit codes: 0 ok · 1 a verdict failed · 2 usage/input error · 3 the requested cell could not run ·
    4 internal error.
    """


__all__ = ["COMMANDS", "BenchGroup", "main"]
