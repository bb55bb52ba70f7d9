"""The service side: ``bench serve`` (the reference detect service) and ``bench load`` (load-test one)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from bench.cli.common import emit_json, json_option, model_dir_option, out_option
from bench.cli.options import build, setting_options
from bench.console import log
from bench.errors import InputError
from bench.load.findmax import DEFAULT_SLO_P99_MS, MAX_STEPS, MIN_STEP_S
from bench.service.config import ServiceConfig

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@click.command()
@model_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8007,
    show_default=True,
    help="Port (0 picks a free one; the ready line says which).",
)
@setting_options(ServiceConfig)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish on SIGTERM/Ctrl-C.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="warning",
    show_default=True,
    help="uvicorn log level (stderr).",
)
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn access log).")
@click.option("--no-build", is_flag=True, help="Never build a missing variant; the model fails to load instead.")
def serve(
    model_dir: Path | None,
    host: str,
    port: int,
    graceful_timeout: float,
    log_level: str,
    access_log: bool,
    no_build: bool,
    **kw: Any,
) -> None:
    """Reference detect service: /health, /health/live, /health/ready, /detect, /detect/batch, /metrics.

    \b
    The port answers at once; the model loads in the background (/health/ready: 503 until the
    session exists and a warm-up inference succeeded). One line on stderr says when it is ready:
      bench serve: ready on http://127.0.0.1:8007 · ...
    A model that fails to load keeps the server up: /detect answers 503 with the reason.
    """
    from bench.service.server import serve as run_server

    config = build(ServiceConfig, kw, model_dir=model_dir, allow_build=not no_build)
    run_server(
        config, host=host, port=port, log_level=log_level, access_log=access_log, graceful_timeout_s=graceful_timeout
    )


@click.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8007",
    show_default=True,
    help="Base URL of a running service (loopback only unless --allow-remote).",
)
@click.option(
    "--endpoint",
    type=click.Choice(["detect", "batch", "health"]),
    default="detect",
    show_default=True,
    help="POST /detect, POST /detect/batch or GET /health/live.",
)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Open loop: requests/s (default 10; with --find-max the starting rate, default the 1-2-5 step below "
    "half the closed-loop capacity).",
)
@click.option(
    "--arrival",
    type=click.Choice(["constant", "poisson"]),
    default="constant",
    show_default=True,
    help="Open-loop arrivals: evenly spaced or a seeded Poisson process.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help=f"Seconds of load (default 10; with --find-max the shortest step, default {MIN_STEP_S:g}: a step lasts "
    "until it holds 500 answers past its warm-up, 5 beyond the p99).",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Closed loop instead: keep N requests in flight (labelled mode: closed).",
)
@click.option("--max-requests", type=int, default=None, help="Request cap (default 100000).")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of images to send, cycled (default: the demo set).",
)
@click.option("--batch-files", type=int, default=4, show_default=True, help="Files per /detect/batch request.")
@click.option(
    "--find-max",
    is_flag=True,
    help="Step the rate up; report the bracket [highest rate meeting --p99-slo with no errors, lowest failing], "
    "with the p99's interval at each (as bench matrix --with-service does).",
)
@click.option(
    "--p99-slo", type=float, default=DEFAULT_SLO_P99_MS, show_default=True, help="p99 latency SLO (ms) for --find-max."
)
@click.option(
    "--max-steps",
    type=int,
    default=MAX_STEPS,
    show_default=True,
    help="Most rate probes of --find-max (retests count).",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="--find-max: seconds the search may take; a step that would end past them is not started and the "
    "bracket so far is reported ('budget reached'), as bench matrix --service-budget does.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Per-request timeout (s).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of Poisson arrivals.")
@click.option("--connections", type=int, default=256, show_default=True, help="Open loop: connection pool size.")
@click.option("--no-ceiling", is_flag=True, help="Skip measuring the generator's own ceiling first.")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --url.")
@click.option(
    "--cpus",
    default=None,
    help="Pin this generator to these CPUs (taskset's list: 0, 0,2, 2-3; Linux), apart from a server on the same "
    "machine (bench serve --cpus): else the two trade cores and the figures follow the scheduler.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Exit 1 when more than this percentage of requests failed (errors, 3xx, answers without the service's "
    "JSON); 0 = any error fails the run. Not applied to --find-max, whose failing steps are expected.",
)
@click.option(
    "--generators",
    type=int,
    default=1,
    show_default=True,
    help="Split the load over N independent generators (processes or Ray actors); one merged result.",
)
@click.option(
    "--executor",
    "generator_executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where --generators run: processes here, or Ray actors spread over a cluster's nodes.",
)
@click.option("--ray-address", default=None, help="Ray cluster for --executor ray (default: $RAY_ADDRESS, else local).")
@json_option("the LoadResult")
@out_option("Write load.json here.")
def load(
    url: str,
    endpoint: str,
    rate: float | None,
    arrival: str,
    duration: float | None,
    concurrency: int | None,
    max_requests: int | None,
    images: Path | None,
    batch_files: int,
    find_max: bool,
    p99_slo: float,
    max_steps: int,
    budget: float | None,
    timeout: float,
    seed: int,
    connections: int,
    no_ceiling: bool,
    allow_remote: bool,
    cpus: str | None,
    max_error_rate: float,
    generators: int,
    generator_executor: str,
    ray_address: str | None,
    as_json: bool,
    out: Path | None,
) -> None:
    """Load test a running detect service: open loop at a fixed rate (default) or closed loop.

    Open-loop latency counts from each request's scheduled send time, so a stalled server shows in the
    tail. Errors are counted by status or exception; more than --max-error-rate % of them exits 1 (after the
    results are written); a bad flag or a remote --url without --allow-remote exits 2.
    """
    from bench.affinity import parse_cpus, pin_process
    from bench.datasets import image_files, resolve_dataset
    from bench.errors import VerdictFailed
    from bench.load import LoadSpec, StepRule, run_find_max, run_generators, run_load, summary_lines
    from bench.results import atomic_write_text

    paths: tuple[Path, ...] = ()
    if endpoint != "health":
        paths = tuple(image_files(resolve_dataset(images)))
    spec = LoadSpec(
        url=url,
        endpoint=endpoint,
        rate=rate if rate is not None or concurrency else 10.0,
        arrival=arrival,
        duration_s=duration or (MIN_STEP_S if find_max else 10.0),
        concurrency=concurrency,
        max_requests=max_requests,
        images=paths,
        files_per_request=batch_files,
        timeout_s=timeout,
        seed=seed,
        connections=connections,
        allow_remote=allow_remote,
        measure_ceiling=not no_ceiling,
    )
    if cpus is not None:
        if generators != 1 or generator_executor != "local":
            raise InputError("--cpus pins one local generator; drop --generators/--executor ray")
        pin_process(parse_cpus(cpus))
        log(f"load: generator pinned to CPU {cpus}")
    if ray_address and generator_executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    if budget is not None and not find_max:
        raise InputError("--budget bounds a --find-max search; add --find-max or drop --budget")
    if find_max and (generators != 1 or generator_executor != "local"):
        raise InputError("--find-max steps one local generator; drop --generators/--executor ray")
    if generators != 1 or generator_executor == "ray":
        result = run_generators(spec, generators, generator_executor, ray_address, log=log)
    elif find_max:
        rule = StepRule(slo_p99_ms=p99_slo, min_step_s=spec.duration_s, max_steps=max_steps)
        deadline = None if budget is None else time.monotonic() + budget
        result = run_find_max(spec, rule, start_rate=rate, log=log, deadline=deadline)
    else:
        result = run_load(spec, log=log)
    if out is not None:
        atomic_write_text(out / "load.json", result.to_json() + "\n")
        log(f"wrote {out / 'load.json'}")
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo("\n".join(summary_lines(result)))
    failed = sum(result.errors.values())
    if not find_max and (result.requests == 0 or failed * 100 > max_error_rate * result.requests):
        shown = ", ".join(f"{key} ×{n}" for key, n in sorted(result.errors.items(), key=lambda kv: -kv[1])[:4])
        raise VerdictFailed(
            f"{failed} of {result.requests} requests failed ({shown or 'nothing was sent'}), over --max-error-rate "
            f"{max_error_rate:g} %"
        )
