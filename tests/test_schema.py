"""The typed results contract: committed files validate, the published schemas are current, bad files are refused."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.compare import CompareResult, compare_runs, compare_schema
from bench.errors import InputError
from bench.results import CellResult, ModelInfo, RunResult, results_schema, schema_text, validate_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FILES = sorted({*ROOT.glob("reports/**/results.json"), *ROOT.glob("tests/data/**/results*.json")})
FIXTURE = ROOT / "tests" / "data" / "report" / "results.json"
REGENERATE = (
    'regenerate with: .venv/bin/python -c "from bench.results import results_schema, schema_text; '
    "from bench.compare import compare_schema; "
    "open('docs/results.schema.json', 'w').write(schema_text(results_schema())); "
    "open('docs/compare.schema.json', 'w').write(schema_text(compare_schema()))\""
)


def fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_there_are_committed_results_files() -> None:
    assert FIXTURE in RESULTS_FILES and len(RESULTS_FILES) >= 3


def assert_kept(original: Any, written: Any, where: str = "") -> None:
    """Every key of ``original`` is in ``written`` with an equal value (a record's defaults may be added)."""
    if isinstance(original, dict):
        assert isinstance(written, dict), where
        for key, value in original.items():
            assert key in written, f"{where}.{key} was dropped"
            assert_kept(value, written[key], f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(written, list) and len(written) == len(original), where
        for i, (a, b) in enumerate(zip(original, written, strict=True)):
            assert_kept(a, b, f"{where}[{i}]")
    else:
        int_as_float = type(original) is int and type(written) is float  # a JSON integer where the contract has a float
        assert written == original and (type(written) is type(original) or int_as_float), where


@pytest.mark.parametrize("path", RESULTS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_load_whole_and_stably(tmp_path: Path, path: Path) -> None:
    """The validated RunResult loses nothing of a file; written back and loaded again, it is the same bytes."""
    original = json.loads(path.read_text(encoding="utf-8"))
    run = RunResult.load(path)
    assert_kept(original, json.loads(run.to_json()))
    assert RunResult.load(write(tmp_path, json.loads(run.to_json()))).to_json() == run.to_json()


def test_load_returns_the_validated_records(tmp_path: Path) -> None:
    """Records are built by the validation itself: dataclasses where the contract has them, plain dicts for nested
    objects (a service entry's load too, as LoadResult.to_dict() writes it), unknown nested keys kept."""
    data = json.loads((ROOT / "reports" / "example" / "results.json").read_text(encoding="utf-8"))
    data["service"][0]["startup"]["dns_ms"] = 1.0
    run = RunResult.load(write(tmp_path, data))
    assert isinstance(run.cells[0], CellResult) and isinstance(run.cells[0].model, ModelInfo)
    entry = (run.service or [])[0]
    assert type(entry["load"]) is dict and entry["load"] == data["service"][0]["load"]
    assert dict(entry["startup"] or {})["dns_ms"] == 1.0
    assert validate_results(data).to_dict() == run.to_dict()


@pytest.mark.parametrize(
    ("name", "make"), [("results.schema.json", results_schema), ("compare.schema.json", compare_schema)]
)
def test_published_schema_is_current(name: str, make: Any) -> None:
    published = ROOT / "docs" / name
    assert published.is_file(), REGENERATE
    assert published.read_text(encoding="utf-8") == schema_text(make()), REGENERATE


def test_schema_describes_the_contract() -> None:
    schema = results_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["properties"]["schema_version"]["const"] == 1
    assert {"schema_version", "cells", "environment", "config"} <= set(schema["required"])
    defs = schema["$defs"]
    assert defs["CellResult"]["properties"]["status"]["enum"] == ["ok", "unavailable", "failed"]
    assert set(defs["CellLatency"]["properties"]) == {"n", "mean", "std", "min", "max", "p50", "p90", "p95", "p99"}
    assert {"agreement", "predictions", "confusion", "reasons"} <= set(defs["Accuracy"]["properties"])
    assert defs["ServiceEntry"]["properties"]["load"]["anyOf"][0] == {"$ref": "#/$defs/LoadResult"}
    assert {"url", "latency_ms", "server", "generator_ceiling_rps"} <= set(defs["LoadResult"]["required"])


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("cells", 0, "batch_size"), "8", r"cells\[0\]\.batch_size: input should be a valid integer, got '8'"),
        (("cells", 1, "latency_ms", "p50"), "fast", r"cells\[1\]\.latency_ms\.p50: input should be a valid number"),
        (("cells", 0, "status"), "skipped", r"cells\[0\]\.status: input should be 'ok', 'unavailable' or 'failed'"),
        (("cells", 0, "accuracy", "confusion"), [[5, 1.5], [1, 5]], r"cells\[0\]\.accuracy\.confusion\[0\]\[1\]"),
        (("cells", 0, "model"), "model.onnx", r"cells\[0\]\.model: input should be an object"),
        (("environment", "gpu", "name"), 7, r"environment\.gpu\.name: input should be a valid string, got 7"),
        (("dataset", "n"), True, r"dataset\.n: input should be a valid integer, got True"),
    ],
)
def test_wrong_typed_field_is_refused_naming_it(
    tmp_path: Path, path: tuple[Any, ...], value: Any, message: str
) -> None:
    data = fixture()
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(InputError, match=message) as info:
        RunResult.load(write(tmp_path, data))
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(tmp_path / "results.json"))


def test_wrong_typed_load_result_in_service_is_refused(tmp_path: Path) -> None:
    data = json.loads((ROOT / "reports" / "example" / "results.json").read_text(encoding="utf-8"))
    data["service"][0]["load"]["requests"] = 10.5
    with pytest.raises(InputError, match=r"service\[0\]\.load\.requests: input should be a valid integer"):
        validate_results(data)
    data["service"][0]["load"]["requests"] = 10
    del data["service"][0]["load"]["url"]
    with pytest.raises(InputError, match=r"service\[0\]\.load\.url: field required"):
        validate_results(data)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    data = fixture()
    del data["cells"][2]["variant"]
    with pytest.raises(InputError, match=r"cells\[2\]\.variant: field required$"):
        RunResult.load(write(tmp_path, data))


def test_old_file_without_newer_fields_still_loads(tmp_path: Path) -> None:
    """Keys added to nested objects over time may be missing; the record's own defaults fill the rest."""
    data = fixture()
    data.pop("run_id")
    data.pop("created")
    data.pop("service")
    data.pop("dataset")
    data["environment"] = {"onnxruntime": "1.17.0", "python": "3.10.0"}
    data["config"] = {"command": "run"}
    for cell in data["cells"]:
        for key in ("providers_effective", "io_binding", "session_create_ms", "throughput_ips", "samples_ms"):
            cell.pop(key, None)
        for key in ("system_ram_peak_pct", "samples", "gpu_util_mean_pct", "gpu_util_max_pct"):
            (cell.get("memory") or {}).pop(key, None)
        for key in ("reasons", "images_per_s", "wall_s", "batch_size", "agreement", "skipped"):
            (cell.get("accuracy") or {}).pop(key, None)
        for pred in (cell.get("accuracy") or {}).get("predictions", []):
            pred.pop("pred", None)
    run = RunResult.load(write(tmp_path, data))
    assert len(run.cells) == len(fixture()["cells"]) and run.dataset is None and run.service is None
    assert run.run_id == "" and run.created == ""  # unknown, not invented at load time


def test_unknown_keys_are_allowed(tmp_path: Path) -> None:
    data = fixture()
    data["added_in_a_later_release"] = {"x": 1}
    data["environment"]["kernel_flags"] = ["a"]
    data["config"]["new_flag"] = 3
    data["cells"][0]["energy_j"] = 1.5
    data["cells"][0]["memory"]["vram_reserved_mb"] = 10.0
    data["cells"][0]["accuracy"]["predictions"][0]["logits"] = [0.1, 0.9]
    run = RunResult.load(write(tmp_path, data))
    assert run.cells[0].memory is not None and run.cells[0].memory["vram_reserved_mb"] == 10.0


def test_version_and_cells_are_checked_first() -> None:
    data = fixture()
    data["schema_version"] = 2
    data["cells"][0]["batch_size"] = "x"
    with pytest.raises(InputError, match="schema_version 2 is not supported"):
        validate_results(data)
    with pytest.raises(InputError, match="no 'cells'"):
        validate_results({"schema_version": 1}, source="x.json")


def test_validate_results_accepts_what_bench_writes() -> None:
    """to_dict() output (numpy scalars included, as json_default writes them) validates as it is."""
    np = pytest.importorskip("numpy")
    run = RunResult.load(FIXTURE)
    run.cells[0].throughput_ips = np.float64(12.5)  # type: ignore[assignment]
    validate_results(run.to_dict())


def test_compare_result_matches_its_schema() -> None:
    from pydantic import TypeAdapter

    base = RunResult.load(ROOT / "reports" / "baseline" / "results.json")
    cur = RunResult.load(ROOT / "reports" / "example" / "results.json")
    result = compare_runs(base, cur)
    assert result.rows
    TypeAdapter(CompareResult).validate_json(result.to_json(), strict=True)


def test_importing_the_contract_does_not_import_pydantic() -> None:
    code = "import sys, bench.results, bench.compare; sys.exit('pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_validation_does_not_touch_the_data() -> None:
    data = fixture()
    before = copy.deepcopy(data)
    validate_results(data)
    assert data == before


def test_bench_schema_command_prints_the_published_schemas() -> None:
    from click.testing import CliRunner

    from bench.cli import main

    root = Path(__file__).resolve().parent.parent
    for what in ("results", "compare"):
        out = CliRunner().invoke(main, ["schema", what])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output) == json.loads((root / "docs" / f"{what}.schema.json").read_text(encoding="utf-8"))
