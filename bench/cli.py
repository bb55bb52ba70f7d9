"""The ``bench`` command: parse options, call the library, print. No measuring logic lives here.

Heavy modules (onnxruntime, pandas, matplotlib) are imported inside commands so ``bench --help``
stays fast.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bench import __version__
from bench.errors import BenchError, CellNotRun

ISSUES_URL = "the bench issue tracker"


class BenchGroup(click.Group):
    """Turns BenchError into one line on stderr + its exit code; anything unexpected into exit 4."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # internal error: one line, where to report, exit 4
            where = _where(exc)
            click.echo(f"internal error: {type(exc).__name__}: {exc} (at {where}); please report it to {ISSUES_URL} "
                       "with the command line (BENCH_DEBUG=1 shows the traceback)", err=True)
            if _debug():
                raise
            ctx.exit(4)


def _debug() -> bool:
    import os

    return os.environ.get("BENCH_DEBUG") == "1"


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

    Exit codes: 0 ok · 1 a verdict failed · 2 usage/input error · 3 the requested cell could not run ·
    4 internal error.
    """


# --- shared options -------------------------------------------------------------------------------

def model_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--model-dir", type=click.Path(path_type=Path), default=None,
                        help="Model folder (onnx/model*.onnx + config.json) or a folder of .onnx files. "
                             "Default: $BENCH_MODEL_DIR, ./variants/demo, then the bundled demo.")(f)


def measure_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Flags shared by every command that measures latency (run, matrix, ab)."""
    opts = [
        click.option("--iterations", type=int, default=100, show_default=True, help="Timed calls per cell."),
        click.option("--warmup", type=int, default=10, show_default=True, help="Untimed calls before timing."),
        click.option("--min-time", type=float, default=None,
                     help="Keep timing until this many seconds passed (and at least --iterations calls)."),
        click.option("--threads", type=int, default=None, help="Intra-op threads (default: ORT's, all cores)."),
        click.option("--inter-op-threads", type=int, default=None, help="Inter-op threads."),
        click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
                     show_default=True, help="ORT graph optimisation level."),
        click.option("--device-id", type=int, default=0, show_default=True, help="GPU index for cuda/tensorrt."),
        click.option("--trt-fp16/--no-trt-fp16", default=True, show_default=True, help="TensorRT fp16 kernels."),
        click.option("--trt-cache", type=click.Path(path_type=Path), default=None,
                     help="TensorRT engine cache folder (re-used across runs)."),
        click.option("--io-binding/--no-io-binding", default=None,
                     help="IOBinding with device-resident input (default: on for GPU providers, off for cpu)."),
        click.option("--sample-hz", type=float, default=10.0, show_default=True,
                     help="Memory/utilisation sampling rate; 0 turns sampling off."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input tensor."),
        click.option("--no-build", is_flag=True, help="Never build a missing variant; fail instead (exit 2)."),
    ]
    return functools.reduce(lambda g, opt: opt(g), reversed(opts), f)


def run_options_from(kw: dict[str, Any]) -> Any:
    """RunOptions from the shared measuring flags."""
    from bench.engine import SessionSpec
    from bench.providers import ProviderOptions
    from bench.runner import RunOptions
    from bench.timing import LoopSpec

    return RunOptions(
        batch_size=kw["batch_size"],
        loop=LoopSpec(iterations=kw["iterations"], warmup=kw["warmup"], min_time_s=kw["min_time"]),
        session=SessionSpec(
            threads=kw["threads"], inter_op_threads=kw["inter_op_threads"], graph_opt=kw["graph_opt"],
            provider_options=ProviderOptions(device_id=kw["device_id"], trt_fp16=kw["trt_fp16"],
                                             trt_cache_dir=kw["trt_cache"]),
        ),
        io_binding=kw["io_binding"],
        sample_hz=kw["sample_hz"],
        seed=kw["seed"],
    )


def emit_json(document: str) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(document)


# --- commands -------------------------------------------------------------------------------------

@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the environment object as JSON.")
def info(as_json: bool) -> None:
    """Environment fingerprint and which providers are usable here, with the reason when not."""
    import json

    from bench.engine import probe_provider
    from bench.environment import fingerprint
    from bench.providers import PROVIDER_NAMES

    env = fingerprint()
    env["providers"] = {name: probe_provider(name) for name in PROVIDER_NAMES}
    if as_json:
        emit_json(json.dumps(env, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(f"[bold]bench {__version__}[/] · onnxruntime {env['onnxruntime']} "
                  f"({env['onnxruntime_build']} build) · "
                  f"python {env['python']} · onnx {env['onnx']} · numpy {env['numpy']}")
    cpu = env["cpu"]
    console.print(f"CPU: {cpu['model']} · {cpu['cores_physical']} cores / {cpu['cores_logical']} threads · "
                  f"RAM {env['memory_total_mb']:,} MB · machine id {env['machine_id']}")
    gpu = env["gpu"]
    console.print(f"GPU: {gpu['name']} · driver {gpu['driver']} · CUDA {gpu['cuda']} · {gpu['memory_total_mb']:,} MB"
                  if gpu else f"GPU: none — {env['gpu_reason']}")
    libs = env["cuda_libraries"]
    console.print("CUDA libraries: " + ", ".join(f"{k} {'found' if v else 'missing'}" for k, v in libs.items()))
    table = Table("provider", "usable", "execution provider / reason")
    for name, state in env["providers"].items():
        table.add_row(name, "yes" if state["usable"] else "no", state["reason"] or state["execution_provider"])
    console.print(table)


@main.command()
@model_dir_option
@click.option("--variant", default="fp32", show_default=True,
              help="Variant name (fp32, fp16, int8, q4, bnb4, ...), a comma list, or all.")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt (or a comma list).")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Images per call.")
@measure_options
@click.option("--dataset", type=click.Path(path_type=Path), default=None,
              help="Use real images from this folder as the input batch (default: a seeded random tensor).")
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as JSON on stdout, nothing else.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write results.json + results.csv here.")
def run(model_dir: Path | None, variant: str, provider: str, as_json: bool, out: Path | None,
        dataset: Path | None, no_build: bool, **kw: Any) -> None:
    """Measure one cell: a variant on a provider at one batch size (latency, throughput, memory).

    A cuda/tensorrt request on a machine that cannot run it yields status "unavailable" with the
    reason and exit code 3 — never CPU numbers under a GPU label.
    """
    from bench.bundle import Bundle, resolve_model_dir
    from bench.console import cell_progress, cells_table, log, print_table
    from bench.providers import parse_providers
    from bench.runner import run_cells
    from bench.variants import parse_variants

    options = run_options_from(kw)
    providers = parse_providers(provider)
    bundle = Bundle.discover(resolve_model_dir(model_dir))
    variants = parse_variants(variant, bundle)
    with cell_progress(enabled=not as_json) as progress:
        result = run_cells(bundle, variants, providers, options, dataset=dataset, allow_build=not no_build,
                           log=log, progress=progress)
    if out is not None:
        json_path, _ = result.write(out)
        log(f"wrote {json_path} and results.csv")
    if as_json:
        emit_json(result.to_json())
    else:
        print_table(cells_table(result.cells, title=f"bench run · {bundle.root}"))
    not_run = [c for c in result.cells if c.status != "ok"]
    if not_run:
        raise CellNotRun("; ".join(c.reason or c.status for c in not_run))


if __name__ == "__main__":  # pragma: no cover
    main()
