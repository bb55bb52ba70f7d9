"""Settings are declared once (bench.settings): every config field has a role, the lists derived from the roles
name keys the results schema declares, and the CLI checks each setting's range once, naming the flag."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from bench import compare, matrix
from bench.cli import COMMANDS, main
from bench.cli.options import build
from bench.errors import InputError
from bench.evaluate import EvalSpec
from bench.options import LoopSpec, RunOptions, SessionSpec
from bench.providers import ProviderOptions
from bench.results import results_schema
from bench.service.config import ServiceConfig
from bench.service.harness import ServiceRunSpec
from bench.settings import ROLES, keys_with_role, walk

CONFIG_CLASSES = [LoopSpec, SessionSpec, ProviderOptions, RunOptions, ServiceConfig, EvalSpec, ServiceRunSpec]


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_declared_with_a_role(cls: type) -> None:
    undeclared = [f.name for f, s in walk(cls) if s is None]
    assert undeclared == [], f"{cls.__name__}: fields without a setting(...) declaration: {undeclared}"
    assert {s.role for _f, s in walk(cls) if s is not None} <= set(ROLES)


def _config_properties() -> set[str]:
    schema = results_schema()
    ref = schema["properties"]["config"]["$ref"].rsplit("/", 1)[-1]
    return set(schema["$defs"][ref]["properties"])


def test_derived_keys_are_declared_in_the_results_schema() -> None:
    declared = _config_properties()
    derived = {
        "recorded config": set(RunOptions().as_config()),
        "resume keys": set(matrix.MEASURE_KEYS),
        "compare's watch list": set(compare._CONFIG_WATCH),
    }
    for what, keys in derived.items():
        assert keys <= declared, f"{what} not in the results schema: {sorted(keys - declared)}"


def test_recorded_config_keeps_its_keys_and_values() -> None:
    """The config a result records is derived now; users' scripts read these keys (results contract)."""
    options = RunOptions(
        batch_size=8,
        loop=LoopSpec(iterations=50, warmup=3, min_time_s=1.5),
        session=SessionSpec(threads=2, graph_opt="basic", provider_options=ProviderOptions(trt_cache_dir=Path("c"))),
        replicates=3,
    )
    assert options.as_config() == {
        "batch_size": 8,
        "iterations": 50,
        "warmup": 3,
        "replicate_warmup": 2,
        "min_time_s": 1.5,
        "threads": 2,
        "inter_op_threads": None,
        "graph_opt": "basic",
        "device_id": 0,
        "trt_fp16": True,
        "trt_int8": False,
        "cuda_graph": False,
        "trt_cache": "c",
        "io_binding": None,
        "sample_hz": 10.0,
        "seed": 0,
        "replicates": 3,
        "rounds": None,
        "target_precision": None,
        "max_time_s": None,
        "gc_disabled_during_timing": True,
    }


def test_resume_and_compare_lists_cover_the_settings_that_change_a_figure() -> None:
    """The lists drifted when they were typed by hand: replicates, trt_int8, cuda_graph, trt_cache were missing."""
    for key in ("replicates", "trt_int8", "cuda_graph", "trt_cache", "iterations", "threads", "seed"):
        assert key in matrix.MEASURE_KEYS
    assert set(keys_with_role(RunOptions, "watch")) == set(compare._CONFIG_WATCH)
    assert "iterations" not in compare._CONFIG_WATCH  # a different count changes precision, not the figure


def test_library_checks_the_same_ranges_naming_the_flag() -> None:
    with pytest.raises(InputError, match=r"--threads must be ≥ 0, got -2"):
        SessionSpec(threads=-2)
    with pytest.raises(InputError, match=r"--graph-opt must be one of"):
        SessionSpec(graph_opt="fast")
    with pytest.raises(InputError, match=r"--replicates must be ≥ 1"):
        RunOptions(replicates=0)
    with pytest.raises(InputError, match=r"--max-batch must be ≥ 1"):
        ServiceConfig(max_batch=0)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["run", "--threads", "-2"], "--threads"),
        (["run", "--threads", "10000"], "--threads"),
        (["run", "--iterations", "0"], "--iterations"),
        (["run", "--graph-opt", "fast"], "--graph-opt"),
        (["ab", "--replicates", "0"], "--replicates"),
        (["matrix", "--sample-hz", "-1"], "--sample-hz"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--max-batch", "0"], "--max-batch"),
        (["eval", "--threshold", "1.5"], "--threshold"),
    ],
)
def test_out_of_range_flags_exit_2_naming_the_flag(argv: list[str], flag: str) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert flag in result.output


def test_build_takes_the_declared_fields_out_of_the_keyword_arguments() -> None:
    kw: dict[str, Any] = {"iterations": 7, "threads": 1, "trt_int8": True, "replicates": 2, "other": "kept"}
    options = build(RunOptions, kw, batch_size=4)
    assert (options.batch_size, options.loop.iterations, options.session.threads) == (4, 7, 1)
    assert options.session.provider_options.trt_int8 and options.replicates == 2
    assert kw == {"other": "kept"}


def test_serve_options_come_from_service_config() -> None:
    """Each declared ServiceConfig flag is a `bench serve` option with the field's own default."""
    serve = main.get_command(click.Context(main), "serve")
    assert serve is not None
    params = {p.name: p for p in serve.params}
    for f, s in walk(ServiceConfig):
        if s is not None and s.flag:
            assert f.name in params, f.name
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, tuple):
                default = ",".join(default)
            assert params[f.name].default == default, f.name


def test_lazy_command_table_matches_the_commands() -> None:
    """`bench --help` lists COMMANDS' summaries without importing the modules: they must say what the commands say."""
    ctx = click.Context(main)
    for name, (_module, _attribute, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name.rstrip("_")
        assert command.get_short_help_str(limit=1000) == summary, name
