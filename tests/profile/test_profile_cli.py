"""`bench profile` in a fresh process: the JSON the issue names, --against, bad input and an unavailable GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from convnet import make_convnet

from cli import run_bench


def test_profile_json(tiny_bundle: Path, peak_cache: Path) -> None:
    res = run_bench(
        "profile",
        "--model-dir",
        str(tiny_bundle),
        "--json",
        "--runs",
        "5",
        "--threads",
        "1",
        env={"BENCH_CACHE_DIR": str(peak_cache)},
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["total_flops"] > 0 and data["peak_gflops"] > 0 and data["fraction_of_peak"] > 0
    assert {"op_type", "calls", "ms", "share"} <= set(data["op_types"][0])
    assert {"name", "op_type", "ms", "flops"} <= set(data["nodes"][0])
    assert abs(sum(r["share"] for r in data["op_types"]) - 1) < 0.01
    assert "Conv" in {r["op_type"] for r in data["op_types"]} and data["not_counted"]
    assert (peak_cache / "peak.json").is_file()  # measured once, cached per machine id


def test_profile_console_and_no_peak(tiny_bundle: Path) -> None:
    res = run_bench("profile", "--model-dir", str(tiny_bundle), "--runs", "3", "--no-peak")
    assert res.returncode == 0, res.stderr
    assert "op type" in res.stdout and "not counted in FLOPs" in res.stdout and "machine peak —" in res.stdout


def test_profile_against_a_twin(tmp_path: Path) -> None:
    make_convnet(tmp_path / "a" / "model.onnx")
    make_convnet(tmp_path / "b" / "model.onnx", channels=(48, 80, 64, 64))
    res = run_bench(
        "profile", "--model-dir", str(tmp_path / "b"), "--against", str(tmp_path / "a"), "--threads", "1", "--json"
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert {"op_type", "a_ms", "b_ms", "delta_ms"} == set(data["op_types"][0])
    assert data["op_types"][0]["op_type"] == "Conv" and "e2e_delta_ms" in data and "explained" in data
    assert data["b"]["total_flops"] > data["a"]["total_flops"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--variant", "fp32,int8"], 2, "one variant"),
        (["--batch-size", "0"], 2, "--batch-size"),
        (["--provider", "cuda", "--no-peak"], 3, "cuda: unavailable"),
    ],
)
def test_profile_bad_input_and_unavailable_provider(tiny_bundle: Path, args: list[str], code: int, words: str) -> None:
    res = run_bench("profile", "--model-dir", str(tiny_bundle), *args, no_gpu=True)
    assert res.returncode == code and words in res.stderr, res.stderr


@pytest.mark.slow
def test_matrix_profile_fills_the_report_section(tiny_bundle: Path, tmp_path: Path, peak_cache: Path) -> None:
    out = tmp_path / "m"
    res = run_bench(
        "matrix", "--model-dir", str(tiny_bundle), "--variants", "fp32", "--providers", "cpu", "--batch-sizes", "1",
        "--no-accuracy", "--iterations", "10", "--replicates", "2", "--threads", "1", "--profile", "--out", str(out),
        env={"BENCH_CACHE_DIR": str(peak_cache)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    cell = json.loads((out / "results.json").read_text())["cells"][0]
    assert cell["profile"]["total_flops"] > 0 and cell["profile"]["fraction_of_peak"] > 0
    assert cell["profile"]["op_types"][0]["share"] > 0 and len(cell["profile"]["nodes"]) <= 15
    assert "features" in json.loads((out / "results.json").read_text())["environment"]["cpu"]
    assert (out / "profiles" / "fp32-cpu-b1.json").is_file() and (out / "plots" / "where-fp32.png").is_file()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Where the time goes" in report and "plots/where-fp32.png" in report
    # the timed figure was measured before any profile: its samples are the cell's own
    assert len(cell["samples_ms"]) == 10


@pytest.mark.slow
def test_compare_explain_says_a_slowdown_outside_the_operators(tiny_bundle: Path, tmp_path: Path) -> None:
    """Same model file on both sides (compare matches by sha256); the current side is the baseline's results with
    every sample ×3 (a slower machine, say): the profiles find no op-type difference, and the explanation says the
    slowdown lies outside the operators."""
    res = run_bench("run", "--model-dir", str(tiny_bundle), "--iterations", "100", "--threads", "1",
                    "--out", str(tmp_path / "a"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    for cell in data["cells"]:
        cell.pop("noise", None)  # the copy is judged on its figures alone
        cell["samples_ms"] = [x * 3 for x in cell["samples_ms"]]
        cell["latency_ms"] = {k: (v * 3 if k not in ("n", "std") else v) for k, v in cell["latency_ms"].items()}
        for rep in (cell.get("replicates") or {}).get("items", []):
            rep["p50_ms"] = rep.get("p50_ms", 0) * 3
    a_data = json.loads((tmp_path / "a" / "results.json").read_text())
    for cell in a_data["cells"]:
        cell.pop("noise", None)
    (tmp_path / "a" / "results.json").write_text(json.dumps(a_data))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(data))
    res = run_bench("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--explain", "--json")
    assert res.returncode == 1, res.stderr
    row = next(r for r in json.loads(res.stdout)["rows"] if r["metric"] == "latency_p50_ms")
    assert row["verdict"] == "regression" and row["explanation"]["explained"] < 0.5, row
    assert "outside the operators" in row["why"]
    plain = run_bench("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert "explanation" not in next(r for r in json.loads(plain.stdout)["rows"] if r["metric"] == "latency_p50_ms")
