from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.errors import InputError
from bench.results import CellResult, ModelInfo, RunResult, atomic_write_text


def sample_run() -> RunResult:
    ok = CellResult("fp32", "cpu", 1, providers_effective=["CPUExecutionProvider"], io_binding=False,
                    model=ModelInfo("model.onnx", 1.5, "ab" * 32), session_create_ms=3.0,
                    latency_ms={"n": 2, "mean": 1.5, "std": 0.7, "min": 1.0, "max": 2.0, "p50": 1.5, "p90": 1.9,
                                "p95": 1.95, "p99": 1.99},
                    samples_ms=[1.0, 2.0], throughput_ips=666.7, memory={"rss_peak_mb": 100.0, "gpu_reason": "cpu"})
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
