"""The contract is complete: every key bench writes is declared in the published schemas.

Fresh outputs of ``bench matrix --with-service``, ``run``, ``eval`` and ``ab`` (a tiny model, few calls) are
checked against a strict copy of docs/*.schema.json where no object may carry an undeclared key. The published
schemas themselves keep allowing unknown keys, so files from older and newer benches still load.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.compare import compare_schema
from bench.results import RunResult, results_schema
from bench.service import harness

from models import make_variants_workspace


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that declares properties (open-ended
    maps such as ``dict[str, Any]`` declare none and stay open)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out:
        out["additionalProperties"] = False
    return out


def undeclared(data: Any, schema: dict[str, Any]) -> list[str]:
    """Every problem the strict schema finds, one line each: ``config.claims: undeclared`` (sorted, unique)."""
    problems: set[str] = set()

    def visit(error: jsonschema.ValidationError) -> None:
        if error.context:  # anyOf (X | None): report from the branch that fits the value's type
            for sub in error.context:
                if not (sub.validator == "type" and sub.absolute_path == error.absolute_path):
                    visit(sub)
            return
        where = "".join("[]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".") or "top level"
        if error.validator == "additionalProperties":
            declared = error.schema.get("properties", {})
            problems.update(f"{where}.{key}: undeclared" for key in error.instance if key not in declared)
        else:
            problems.add(f"{where}: {error.message[:120]}")

    for error in jsonschema.Draft202012Validator(strict(schema)).iter_errors(data):
        visit(error)
    return sorted(problems)


def test_strict_check_names_undeclared_keys_and_spares_open_maps() -> None:
    data = json.loads((Path(__file__).parent / "data" / "report" / "results.json").read_text(encoding="utf-8"))
    data["config"]["new_flag"] = 1
    data["cells"][0]["memory"]["vram_mb"] = 2.0
    data["cells"][0]["model"]["recipe"] = {"anything": [1]}  # open-ended by declaration
    data["config"]["policy"] = {"any_key": True}
    data["service"][0]["load"]["extra"] = 1
    data["service"][0]["health"]["body"]["new"] = 1  # the service's own /health body: open-ended
    assert undeclared(data, results_schema()) == [
        "cells[].memory.vram_mb: undeclared",
        "config.new_flag: undeclared",
        "service[].load.extra: undeclared",
    ]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh results of every command that writes them, on a tiny model: path by name."""
    root = make_variants_workspace(tmp_path_factory.mktemp("contract"), images_per_class=4)
    model, ds, out = str(root / "tiny"), str(root / "ds"), root / "out"
    fast = ["--iterations", "20", "--warmup", "2", "--replicates", "2"]
    commands = {
        "matrix": ["matrix", "--model-dir", model, "--dataset", ds, "--variants", "fp32,seed2", "--providers", "cpu",
                   "--batch-sizes", "1", *fast, "--perturb", "jpeg:50", "--with-service", "--service-rate", "20",
                   "--service-duration", "0.5", "--out", str(out / "matrix")],
        "run": ["run", "--model-dir", model, "--dataset", ds, *fast, "--out", str(out / "run")],
        "eval": ["eval", "--model-dir", model, "--dataset", ds, "--variant", "fp32,seed2", "--perturb", "jpeg:50",
                 "--out", str(out / "eval")],
        "ab": ["ab", "--model-dir", model, "--dataset", ds, "--variant", "seed2", "--against-variant", "fp32",
               "--iterations", "20", "--warmup", "2", "--blocks", "2", "--out", str(out / "ab")],
    }  # fmt: skip
    # the service's find-max search cut to one short step: the figures keep their shape, not their cost
    short = functools.partial(harness.service_figures, find_max_steps=1, find_max_step_s=0.5, find_max_step_requests=5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "service_figures", short)
        for name, args in commands.items():
            result = CliRunner().invoke(main, args)
            assert result.exit_code in (0, 1), f"bench {name}: {result.output}"  # ab: 1 is a regression verdict
    return {
        "matrix": out / "matrix" / "results.json",
        "run": out / "run" / "results.json",
        "eval": out / "eval" / "results.json",
        "ab baseline": out / "ab" / "baseline" / "results.json",
        "ab current": out / "ab" / "current" / "results.json",
        "ab compare": out / "ab" / "compare.json",
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["matrix", "run", "eval", "ab baseline", "ab current"])
def test_every_key_bench_writes_is_declared(outputs: dict[str, Path], name: str) -> None:
    data = json.loads(outputs[name].read_text(encoding="utf-8"))
    assert undeclared(data, results_schema()) == []
    RunResult.load(outputs[name])  # and the lenient loader takes it


@pytest.mark.slow
def test_compare_result_keys_are_declared(outputs: dict[str, Path]) -> None:
    data = json.loads(outputs["ab compare"].read_text(encoding="utf-8"))
    assert data["rows"] and undeclared(data, compare_schema()) == []


@pytest.mark.slow
def test_fresh_matrix_has_every_section(outputs: dict[str, Path]) -> None:
    """What the strict check above covers: the service entry with its extras, claims, replicates, perturbations."""
    data = json.loads(outputs["matrix"].read_text(encoding="utf-8"))
    config, entry = data["config"], data["service"][0]
    assert {"claims", "replicates", "gc_disabled_during_timing", "service_options", "perturbations"} <= set(config)
    assert entry["status"] == "ok", entry["reason"]
    assert entry["health"]["http_status"] == 200 and entry["startup"]["ready_s"] > 0 and entry["invalid_inputs"]
    assert entry["load"]["requests"] > 0 and entry["max_rate"]["steps"]
    assert entry["metrics"] == {"http_status": 200, "prometheus": True}  # the seed's "/metrics answers" claim
    cell = data["cells"][1]
    assert cell["accuracy"]["agreement"] and cell["accuracy"]["perturbations"] and cell["replicates"]["count"] == 2
    assert cell["replicates"]["processes"] == 2  # one round per replicate (--rounds default), a process each
    assert data["recommendation"] is not None and "tensorrt" in data["environment"]
