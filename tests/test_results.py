from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import InputError
from bench.results import CellResult, ModelInfo, RunResult, atomic_write_text


def sample_run() -> RunResult:
    ok = CellResult(
        "fp32",
        "cpu",
        1,
        providers_effective=["CPUExecutionProvider"],
        io_binding=False,
        model=ModelInfo("model.onnx", 1.5, "ab" * 32),
        session_create_ms=3.0,
        latency_ms={
            "n": 2,
            "mean": 1.5,
            "std": 0.7,
            "min": 1.0,
            "max": 2.0,
            "p50": 1.5,
            "p90": 1.9,
            "p95": 1.95,
            "p99": 1.99,
        },
        samples_ms=[1.0, 2.0],
        throughput_ips=666.7,
        memory={"rss_peak_mb": 100.0, "gpu_reason": "cpu"},
    )
    gone = CellResult.not_run("fp16", "cuda", 1, "unavailable", "cuda: unavailable — no GPU")
    return RunResult(environment={"machine_id": "x"}, config={"iterations": 2}, cells=[ok, gone])


def test_round_trip(tmp_path: Path) -> None:
    run = sample_run()
    run.write(tmp_path)
    back = RunResult.load(tmp_path)
    assert back.to_dict() == run.to_dict()
    assert back.cells[0].model.sha256 == "ab" * 32


def test_unmeasured_fields_are_null_not_missing() -> None:
    cell = json.loads(sample_run().to_json())["cells"][1]
    for key in ("latency_ms", "throughput_ips", "memory", "accuracy", "session_create_ms", "model"):
        assert key in cell and cell[key] is None
    assert cell["reason"] == "cuda: unavailable — no GPU"


def test_other_schema_version_refused(tmp_path: Path) -> None:
    data = sample_run().to_dict()
    data["schema_version"] = 2
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="schema_version 2"):
        RunResult.load(tmp_path / "results.json")


def test_not_a_results_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a bench results file"):
        RunResult.load(tmp_path / "x.json")
    with pytest.raises(InputError, match="not found"):
        RunResult.load(tmp_path / "missing.json")


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's 0600


def test_csv_flattens_nested_fields(tmp_path: Path) -> None:
    import pandas as pd

    sample_run().write(tmp_path)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame["status"]) == ["ok", "unavailable"]
    assert frame.loc[0, "model.sha256"] == "ab" * 32


def accuracy_run() -> RunResult:
    def cell(variant: str, provider: str, batch: int, accuracy: float | None) -> CellResult:
        c = CellResult(variant, provider, batch)
        if accuracy is not None:
            c.accuracy = {"n": 10, "accuracy": accuracy, "predictions": []}
        return c

    return RunResult(
        environment={},
        config={},
        cells=[
            cell("fp32", "cuda", 1, None),  # measured only on cpu
            cell("fp32", "cpu", 1, 0.90),
            cell("fp32", "cpu", 8, None),  # accuracy is evaluated once per (variant, provider)
            cell("fp16", "cuda", 1, 0.89),
            cell("fp16", "cuda", 8, 0.50),  # a later cell does not override the first
            CellResult.not_run("int8", "cpu", 1, "failed", "boom"),
        ],
    )


def test_accuracy_of_is_the_first_evaluated_cell_of_variant_and_provider() -> None:
    run = accuracy_run()
    assert run.accuracy_of("fp32", "cpu") == {"n": 10, "accuracy": 0.90, "predictions": []}
    assert run.accuracy_of("fp16", "cuda")["accuracy"] == 0.89
    assert run.accuracy_of("fp32", "cuda") is None
    assert run.accuracy_of("int8", "cpu") is None


def test_reference_accuracy_falls_back_to_another_provider_and_says_which() -> None:
    run = accuracy_run()
    assert run.reference_accuracy("fp32", "cpu") == (0.90, None)
    assert run.reference_accuracy("fp32", "cuda") == (0.90, "cpu")
    assert run.reference_accuracy("int8", "cpu") == (None, None)


def test_load_refuses_a_wrong_typed_field(tmp_path: Path) -> None:
    data = sample_run().to_dict()
    data["cells"][0]["latency_ms"]["p99"] = "slow"
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"cells\[0\]\.latency_ms\.p99: input should be a valid number, got 'slow'"):
        RunResult.load(tmp_path)
