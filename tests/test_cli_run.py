"""``bench run`` and ``bench info`` end to end, through a real subprocess where exit codes and stdout matter."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cli import run_bench as bench
from models import make_classifier


def test_run_json_is_one_document_and_follows_the_contract(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = bench(
        "run",
        "--model-dir",
        str(tiny_bundle),
        "--iterations",
        "20",
        "--warmup",
        "2",
        "--threads",
        "1",
        "--graph-opt",
        "basic",
        "--seed",
        "7",
        "--batch-size",
        "2",
        "--json",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)  # stdout holds exactly one JSON document
    assert doc["schema_version"] == 1 and doc["run_id"] and doc["created"]
    assert doc["config"]["threads"] == 1 and doc["config"]["graph_opt"] == "basic" and doc["config"]["seed"] == 7
    cell = doc["cells"][0]
    assert (cell["variant"], cell["provider"], cell["batch_size"], cell["status"]) == ("fp32", "cpu", 2, "ok")
    assert cell["providers_effective"] == ["CPUExecutionProvider"] and cell["io_binding"] is False
    assert len(cell["samples_ms"]) == 20 == cell["latency_ms"]["n"]
    lat = cell["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert cell["throughput_ips"] == pytest.approx(2 / (lat["mean"] / 1000), rel=1e-3)
    assert cell["session_create_ms"] > 0
    assert len(cell["model"]["sha256"]) == 64 and cell["model"]["file"] == "model.onnx"
    assert cell["memory"]["rss_peak_mb"] > 0 and cell["memory"]["gpu_reason"]
    assert doc["environment"]["onnxruntime"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["run_id"] == doc["run_id"]
    csv = pd.read_csv(out / "results.csv")
    assert csv.loc[0, "latency_ms.p50"] == pytest.approx(lat["p50"])
    assert "samples_ms" not in csv.columns


def test_run_from_any_directory_uses_the_demo(tmp_path: Path) -> None:
    p = bench("run", "--iterations", "3", "--warmup", "1", "--json", cwd=tmp_path, env={"BENCH_MODEL_DIR": ""})
    assert p.returncode == 0, p.stderr
    assert Path(json.loads(p.stdout)["config"]["model_dir"]).name == "demo"


def test_cuda_on_this_machine_is_unavailable_exit_3(tiny_bundle: Path) -> None:
    p = bench("run", "--model-dir", str(tiny_bundle), "--provider", "cuda", "--iterations", "2", "--json")
    assert p.returncode == 3
    cell = json.loads(p.stdout)["cells"][0]
    assert cell["status"] == "unavailable" and cell["latency_ms"] is None and cell["samples_ms"] == []
    assert cell["reason"].startswith("cuda: unavailable — ")
    assert p.stderr.strip().splitlines()[-1].startswith("error: cuda: unavailable — ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant", "int7"], "variant 'int7'"),
        (["--provider", "rocm"], "unknown provider 'rocm'"),
        (["--iterations", "0"], "--iterations must be ≥ 1"),
        (["--iterations", "-5"], "--iterations must be ≥ 1"),
        (["--batch-size", "0"], "--batch-size must be ≥ 1"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tiny_bundle: Path, args: list[str], message: str) -> None:
    p = bench("run", "--model-dir", str(tiny_bundle), *args)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert p.stdout == ""


def test_missing_model_dir_exit_2(tmp_path: Path) -> None:
    p = bench("run", "--model-dir", str(tmp_path / "nope"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_fixed_batch_model_exit_2(tmp_path: Path) -> None:
    make_classifier(tmp_path / "m" / "model.onnx", batch=1)
    p = bench("run", "--model-dir", str(tmp_path / "m"), "--batch-size", "8")
    assert p.returncode == 2 and "batch dimension fixed to 1" in p.stderr


def test_truncated_model_exit_2_nothing_written(tmp_path: Path) -> None:
    model = make_classifier(tmp_path / "m" / "model.onnx")
    model.write_bytes(model.read_bytes()[:300])
    p = bench("run", "--model-dir", str(tmp_path / "m"), "--out", str(tmp_path / "out"))
    assert p.returncode == 2 and "not a valid ONNX model" in p.stderr
    assert not (tmp_path / "out").exists()


def test_real_image_input_from_dataset(tiny_bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    p = bench(
        "run",
        "--model-dir",
        str(tiny_bundle),
        "--dataset",
        str(tmp_path),
        "--batch-size",
        "4",
        "--iterations",
        "3",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["dataset"]["n"] == 3


def test_info_json_lists_providers_with_reasons() -> None:
    p = bench("info", "--json")
    assert p.returncode == 0, p.stderr
    env = json.loads(p.stdout)
    assert env["providers"]["cpu"]["usable"] is True
    for gpu in ("cuda", "tensorrt"):
        state = env["providers"][gpu]
        assert state["usable"] is (env["gpu"] is not None and state["reason"] is None)
        if not state["usable"]:
            assert state["reason"].startswith(f"{gpu}: unavailable — ")


def test_help_lists_commands_and_exit_codes() -> None:
    p = bench("--help")
    assert p.returncode == 0 and "run" in p.stdout and "Exit codes" in p.stdout


def test_internal_error_is_exit_4(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from bench import cli

    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("bench.commands.run_cells", boom)  # the command imports it from there when it runs
    result = CliRunner().invoke(cli.main, ["run", "--model-dir", str(tiny_bundle)])
    assert result.exit_code == 4
    assert "internal error: ZeroDivisionError: boom" in result.output


def test_info_lists_each_library_once() -> None:
    """tensorrt loads CUDA's libraries too; the text lists each of them once."""
    p = bench("info")
    assert p.returncode == 0, p.stderr
    rows = [line.split()[0] for line in p.stdout.splitlines() if line.startswith("  lib")]
    assert rows and len(rows) == len(set(rows)), rows


# --- threads fitted to the others' load, and the console's noisy mark -------------------------------


class BusyMachine:
    """A NoiseProbe that reads a 4-CPU machine whose other processes use 2.6 cores (no real load needed)."""

    CPUS, OTHERS = 4, 2.6

    def __init__(self, threads: int | None = None, own_pids: object = ()) -> None:
        self.threads = threads

    def __enter__(self) -> BusyMachine:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def figures(self) -> dict[str, object]:
        from bench.noise import noise_reasons

        reasons, contended = noise_reasons(self.OTHERS, None, self.threads, self.CPUS)
        figures: dict[str, object] = {
            "wall_s": 0.3,
            "loadavg_1m": [3.3, 3.3],
            "cpu_count": self.CPUS,
            "others_cpu_cores": self.OTHERS,
            "steal_pct": None,
            "cpu_freq_mhz": None,
            "noisy": bool(reasons),
            "why": "; ".join(reasons) or None,
        }
        if self.threads is not None:
            figures |= {"threads": self.threads, "contended": contended}
        return figures


@pytest.fixture
def busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every probe reads the busy machine; ORT's default is 4 threads (as on a 4-core box)."""
    import bench.options
    import bench.runner

    monkeypatch.setattr(bench.runner, "NoiseProbe", BusyMachine)
    monkeypatch.setattr(bench.options, "intra_op_threads", lambda threads: threads or BusyMachine.CPUS)


def test_the_thread_fit_is_the_threads_the_others_leave_idle() -> None:
    from bench.noise import fitting_threads

    assert fitting_threads(2.6, 4, 4) == 1  # 1.4 idle CPUs: one thread
    assert fitting_threads(1.0, 4, 4) == 3  # three idle: three threads
    assert fitting_threads(1.0, 2, 2) == 1
    assert fitting_threads(1.2, 1, 2) is None  # one thread already: nothing fewer to fit


def test_run_fits_its_threads_to_a_busy_machine_says_so_and_marks_the_cell(
    tiny_bundle: Path, tmp_path: Path, busy_machine: None
) -> None:
    from click.testing import CliRunner

    from bench.cli import main

    args = ["run", "--model-dir", str(tiny_bundle), "--iterations", "6", "--warmup", "1", "--sample-hz", "0"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "fit")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "fit" / "results.json").read_text())["config"]
    assert config["threads"] == 1 and "instead of ORT's 4" in config["threads_why"]
    assert "--threads 0 keeps ORT's default" in config["threads_why"]
    assert f"run: {config['threads_why']}" in result.stderr  # said on stderr
    assert "ok ⚠" in result.stdout and "⚠ fp32/cpu/b1: noisy — other processes used 2.60 cores" in result.stdout
    told = CliRunner().invoke(main, [*args, "--threads", "0", "--out", str(tmp_path / "told")])
    assert told.exit_code == 0, told.output
    config = json.loads((tmp_path / "told" / "results.json").read_text())["config"]
    assert config["threads"] == 0 and "threads_why" not in config  # --threads 0: ORT's default, as told


def test_a_quiet_cell_has_no_mark() -> None:
    from rich.console import Console

    from bench.console import cells_table
    from bench.results import CellResult

    quiet = CellResult(variant="fp32", provider="cpu", batch_size=1, status="ok")
    quiet.noise = {"noisy": False, "why": None, "threads": 2, "contended": False}
    gpu = CellResult(variant="fp16", provider="cuda", batch_size=1, status="ok")
    gpu.memory = {"gpu_telemetry": {"noise": ["SM clock moved 12 % during the timed phase"]}}
    console = Console(width=200, record=True)
    console.print(cells_table([quiet, gpu]))
    text = console.export_text()
    assert "⚠ fp32" not in text  # quiet: no mark, no caption line
    assert "⚠ fp16/cuda/b1: noisy — SM clock moved 12 % during the timed phase" in text
    assert text.count("ok ⚠") == 1
