"""Ray: matrix cells as Ray tasks and load generators as Ray actors, on a local Ray started here
(``ray.init(num_cpus=2)``, no cluster needed), against the local executor's results.

Skipped only where Ray cannot be imported; the README test command installs it (the ``test`` extra). The
cluster-free parts (bad input, machine classes, compare's rule) run everywhere.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import load
from bench.bundle import Bundle
from bench.cluster import group_by_machine_class, parse_resources
from bench.compare import compare_runs
from bench.engine import SessionSpec
from bench.errors import InputError
from bench.executors import LocalExecutor, RayExecutor
from bench.load import LoadSpec
from bench.matrix import EvalSpec, MatrixOutcome, run_matrix
from bench.results import CellResult, ModelInfo, RunResult
from bench.runner import RunOptions
from bench.service import harness
from bench.timing import LoopSpec

from cli import run_bench
from models import make_variants_workspace

OPTIONS = RunOptions(loop=LoopSpec(iterations=5, warmup=1), session=SessionSpec(threads=1))
CLI = ["matrix", "--iterations", "5", "--warmup", "1", "--threads", "1"]  # after python -m bench
SCHEDULE_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray for this module (2 CPUs, no GPUs whatever the machine has); its GCS address for CLI runs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle with three variants (fp32, wide, seed2) and a 6-image labelled set."""
    return make_variants_workspace(tmp_path_factory.mktemp("ray"), images_per_class=3)


def _matrix(workspace: Path, out: str, executor: Any, variants: list[str], providers: list[str], **kw: Any) -> Any:
    return run_matrix(
        Bundle.discover(workspace / "tiny"),
        variants,
        providers,
        kw.pop("batch_sizes", [1, 2]),
        OPTIONS,
        out=workspace / out,
        executor=executor,
        **kw,
    )


@pytest.fixture(scope="module")
def both(workspace: Path, ray_address: str) -> tuple[MatrixOutcome, MatrixOutcome]:
    """The same small matrix (accuracy included) through the local executor and through Ray."""
    evaluation = EvalSpec(dataset=workspace / "ds")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CUDA_VISIBLE_DEVICES", "")  # cuda unavailable locally on any machine, as on this Ray
        env.setenv("BENCH_FAULTS", "")
        local = _matrix(workspace, "local", None, ["fp32", "wide"], ["cpu", "cuda"], evaluation=evaluation)
        executor = RayExecutor(schedule_timeout_s=SCHEDULE_TIMEOUT_S)
        try:
            on_ray = _matrix(workspace, "ray", executor, ["fp32", "wide"], ["cpu", "cuda"], evaluation=evaluation)
        finally:
            executor.close()
    return local, on_ray


# --- the matrix through Ray -------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_gives_the_same_cells_and_statuses_as_local(both: tuple[MatrixOutcome, MatrixOutcome]) -> None:
    local, on_ray = both
    assert [(c.key, c.status) for c in on_ray.result.cells] == [(c.key, c.status) for c in local.result.cells]
    assert on_ray.result.config["executor"] == "ray" and local.result.config["executor"] == "local"
    here = local.result.environment["machine_id"]
    for cell in on_ray.result.cells:
        if cell.status == "ok":
            placed = cell.placement or {}
            assert placed["executor"] == "ray" and placed["node_id"] and placed["node_ip"]
            assert placed["machine_id"] == here  # the host fingerprint of the node: this machine
            assert placed["gpu_ids"] == [] and placed["machine_class"].startswith("CPU ")
            assert len(cell.samples_ms) == 5 and cell.model is not None
        else:
            assert cell.provider == "cuda" and "no node of the Ray cluster offers GPU: 1" in (cell.reason or "")
    assert all(c.placement is None for c in local.result.cells)
    # accuracy once per (variant, provider), in the first batch size, whichever executor ran it
    evaluated = [(c.key, c.accuracy is not None) for c in on_ray.result.cells]
    assert evaluated == [(c.key, c.accuracy is not None) for c in local.result.cells]
    assert on_ray.result.accuracy_of("wide", "cpu")["agreement"]["reference"] == "fp32"
    written = json.loads((on_ray.out / "results.json").read_text())
    assert all("placement" in c for c in written["cells"] if c["status"] == "ok")
    assert all("placement" not in c for c in json.loads((local.out / "results.json").read_text())["cells"])
    assert RunResult.load(on_ray.out).cells[0].placement == on_ray.result.cells[0].placement  # round-trips


@pytest.mark.slow
def test_resume_across_executors(workspace: Path, both: tuple[MatrixOutcome, MatrixOutcome]) -> None:
    """An unfinished local run finished on Ray, and an unfinished Ray run finished locally: kept cells untouched."""
    local, on_ray = both
    evaluation = EvalSpec(dataset=workspace / "ds")
    for source, name, executor in ((local, "local-then-ray", "ray"), (on_ray, "ray-then-local", "local")):
        out = workspace / name
        shutil.copytree(source.out, out)
        cut = RunResult.load(out)
        dropped = cut.cells.pop(1)  # (fp32, cpu, 2): as if Ctrl-C came before it finished
        cut.write(out)
        runner = RayExecutor(schedule_timeout_s=SCHEDULE_TIMEOUT_S) if executor == "ray" else LocalExecutor()
        try:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("CUDA_VISIBLE_DEVICES", "")
                resumed = _matrix(
                    workspace, name, runner, ["fp32", "wide"], ["cpu", "cuda"], evaluation=evaluation, resume=True
                )
        finally:
            runner.close()
        cells = {c.key: c for c in resumed.result.cells}
        assert resumed.reused == 3 and resumed.result.run_id == source.result.run_id
        assert cells[dropped.key].status == "ok" and cells[dropped.key].samples_ms != dropped.samples_ms
        assert (cells[dropped.key].placement is not None) == (executor == "ray")
        for key in (("fp32", "cpu", 1), ("wide", "cpu", 1), ("wide", "cpu", 2)):
            before = next(c for c in source.result.cells if c.key == key)
            assert cells[key].samples_ms == before.samples_ms and cells[key].placement == before.placement


@pytest.mark.slow
def test_a_crashing_and_a_hanging_cell_are_isolated_on_ray(workspace: Path, ray_address: str) -> None:
    """Through the CLI, joined to the running Ray by address: faults as in the local test, the rest runs."""
    faults = {"crash": {"variant": "wide"}, "slowdown": {"factor": 1e6, "match": "model_seed2"}}
    p = run_bench(
        *CLI,
        "--model-dir",
        "tiny",
        "--variants",
        "fp32,wide,seed2",
        "--providers",
        "cpu",
        "--batch-sizes",
        "1",
        "--no-accuracy",
        "--cell-timeout",
        "4",
        "--executor",
        "ray",
        "--ray-address",
        ray_address,
        "--out",
        "ray-faults",
        "--json",
        cwd=workspace,
        timeout=120,
        env={"BENCH_FAULTS": json.dumps(faults)},
        no_gpu=True,
    )
    assert p.returncode == 0, p.stderr
    cells = {c["variant"]: c for c in json.loads(p.stdout)["cells"]}  # --json: one document on stdout
    assert cells["fp32"]["status"] == "ok" and cells["fp32"]["placement"]["executor"] == "ray"
    assert cells["wide"]["status"] == "failed" and "crashed (SIGABRT" in cells["wide"]["reason"]
    assert cells["seed2"]["status"] == "failed" and "timed out after 4 s" in cells["seed2"]["reason"]
    assert cells["wide"]["placement"]["node_id"] == cells["fp32"]["placement"]["node_id"]


@pytest.mark.slow
def test_cells_no_node_can_run_are_unavailable_not_pending(workspace: Path, ray_address: str) -> None:
    executor = RayExecutor(resources={"bench_no_such_node": 1}, schedule_timeout_s=SCHEDULE_TIMEOUT_S)
    started = time.monotonic()
    try:
        outcome = _matrix(workspace, "ray-unschedulable", executor, ["fp32"], ["cpu"], batch_sizes=[1])
    finally:
        executor.close()
    (cell,) = outcome.result.cells
    assert cell.status == "unavailable" and "bench_no_such_node: 1" in (cell.reason or "")
    assert "--ray-schedule-timeout" in (cell.reason or "") and time.monotonic() - started < 30
    assert outcome.result.config["ray"]["resources"] == {"bench_no_such_node": 1.0}


def _cell_process(tag: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(tag in part for part in proc.info["cmdline"] or []) and "bench._cell" in proc.info["cmdline"]:
                return proc
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_a_lost_worker_fails_its_cell_and_the_rest_go_on(
    workspace: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENCH_FAULTS", json.dumps({"slowdown": {"factor": 1e6, "match": "model_seed2"}}))
    killed: list[psutil.Process] = []

    def kill_the_worker() -> None:  # the Ray worker running seed2's cell dies, as on a lost node
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            child = _cell_process("seed2-cpu-1.spec.json")
            if child is not None:
                time.sleep(0.5)
                worker = child.parent()
                if worker is not None:
                    killed.append(child)
                    worker.kill()
            time.sleep(0.1)

    thread = threading.Thread(target=kill_the_worker, daemon=True)
    thread.start()
    executor = RayExecutor(schedule_timeout_s=SCHEDULE_TIMEOUT_S)
    try:
        outcome = _matrix(
            workspace, "ray-lost", executor, ["seed2", "fp32"], ["cpu"], batch_sizes=[1], cell_timeout_s=60
        )
    finally:
        executor.close()
    thread.join(timeout=5)
    cells = {c.variant: c for c in outcome.result.cells}
    assert killed, "the hanging cell's process was never seen"
    assert cells["seed2"].status == "failed" and "the Ray worker running the cell" in (cells["seed2"].reason or "")
    assert "died" in (cells["seed2"].reason or "") and cells["seed2"].placement is not None
    assert cells["fp32"].status == "ok"
    with pytest.raises(psutil.NoSuchProcess):  # the orphaned child noticed its parent was gone and left
        killed[0].wait(timeout=5)
        killed[0].status()


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_without_ray_installed_the_command_exits_2_with_the_pip_command(workspace: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "no-ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ray is not installed (test)')\n")
    p = run_bench(
        *[*CLI, "--model-dir", "tiny", "--variants", "fp32", "--providers", "cpu", "--executor", "ray"],
        cwd=workspace,
        timeout=60,
        env={"PYTHONPATH": str(blocker.parent)},
    )
    assert p.returncode == 2, p.stderr
    assert "needs Ray, which is not installed" in p.stderr and "pip install 'bench[ray]'" in p.stderr


@pytest.mark.slow
def test_an_unreachable_ray_address_exits_2_within_30_s_naming_it(workspace: Path) -> None:
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"ray://127.0.0.1:{port}"
    started = time.monotonic()
    p = run_bench(
        *[*CLI, "--model-dir", "tiny", "--variants", "fp32", "--executor", "ray", "--ray-address", address],
        cwd=workspace,
        timeout=60,
        env={"RAY_ADDRESS": ""},
    )
    assert p.returncode == 2, p.stderr
    assert address in p.stderr and "cannot reach" in p.stderr and time.monotonic() - started < 30


def test_ray_resources_are_checked() -> None:
    assert parse_resources('{"accelerator_type:H100": 0.001}') == {"accelerator_type:H100": 0.001}
    assert parse_resources(None) == {}
    for bad, why in (
        ("{", "not JSON"),
        ("[1]", "JSON object"),
        ('{"GPU": 1}', "assigned per cell"),
        ('{"x": 0}', "positive"),
    ):
        with pytest.raises(InputError, match=why):
            parse_resources(bad)


# --- heterogeneous fleets: machine classes, and compare's rule ----------------------------------------------


def _placed(variant: str, machine: str, gpu: str) -> CellResult:
    cell = CellResult(variant, "cuda", 1, latency_ms={"p50": 1.0}, samples_ms=[1.0] * 20)
    cell.model = ModelInfo(file="model.onnx", size_mb=1.0, sha256="a" * 64)
    cell.placement = {"executor": "ray", "machine_id": machine, "machine_class": gpu, "node_ip": "10.0.0.1"}
    return cell


def test_cells_are_grouped_per_machine_class() -> None:
    run = RunResult(environment={"cpu": {"model": "Xeon"}, "gpu": None}, config={})
    run.cells = [
        _placed("fp32", "m1", "NVIDIA L4"),
        _placed("fp16", "m2", "NVIDIA H100"),
        _placed("int8", "m1", "NVIDIA L4"),
    ]
    run.cells.append(CellResult("fp32", "cpu", 1))  # run by the local executor: the run's own CPU
    groups = group_by_machine_class(run)
    assert [(name, [c.variant for c in cells]) for name, cells in groups] == [
        ("NVIDIA L4", ["fp32", "int8"]),
        ("NVIDIA H100", ["fp16"]),
        ("CPU Xeon", ["fp32"]),
    ]


def test_compare_treats_cells_from_other_machine_classes_as_incomparable_unless_asked() -> None:
    env = {"machine_id": "driver"}
    baseline = RunResult(environment=env, config={}, cells=[_placed("fp32", "m1", "NVIDIA L4")])
    current = RunResult(environment=env, config={}, cells=[_placed("fp32", "m2", "NVIDIA H100")])
    result = compare_runs(baseline, current)
    (row,) = [r for r in result.rows if r.metric == "machine"]
    assert row.verdict == "incomparable" and "NVIDIA L4" in row.why and "NVIDIA H100" in row.why
    assert all(r.verdict == "incomparable" for r in result.rows)
    asked = compare_runs(baseline, current, cross_machine=True)
    assert not [r for r in asked.rows if r.metric == "machine"] and asked.rows
    same = RunResult(environment=env, config={}, cells=[_placed("fp32", "m1", "NVIDIA L4")])
    assert not [r for r in compare_runs(baseline, same).rows if r.metric == "machine"]


# --- load generators as Ray actors ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(workspace: Path) -> Iterator[str]:
    env = {"BENCH_FAULTS": json.dumps({"service_delay_ms": 20})}  # latency dominated by a known figure
    with harness.serve_subprocess(workspace / "tiny", "fp32", "cpu", env=env, ready_timeout_s=120) as base:
        yield base


@pytest.mark.slow
def test_two_ray_actor_generators_merge_like_one(service: str, ray_address: str, workspace: Path) -> None:
    images = tuple(sorted((workspace / "ds").rglob("*.png")))
    spec = LoadSpec(url=service, rate=16, arrival="poisson", seed=4, duration_s=3.0, images=images, ceiling_s=0.5)
    single = load.run_load(spec)
    double = load.run_generators(spec, 2, executor="ray")
    assert single.requests == double.requests == load.arrival_offsets(16, 3.0, "poisson", seed=4).size
    assert double.ok == double.requests and double.latency_ms["n"] == len(double.samples_ms) == double.ok
    assert all(g["where"].startswith("ray node ") for g in double.generators)
    assert all(g["ceiling_rps"] and g["send_lag_ms"]["p99"] is not None for g in double.generators)
    assert double.valid is True
    p50_1, p50_2 = single.latency_ms["p50"], double.latency_ms["p50"]
    assert abs(p50_2 - p50_1) <= 0.3 * p50_1 + 5.0, (p50_1, p50_2)
    assert double.latency_ms["p99"] <= 2 * single.latency_ms["p99"] + 20.0
